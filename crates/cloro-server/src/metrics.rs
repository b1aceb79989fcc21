//! `GET /metrics` (SPEC §6): request outcomes by route and SPEC §4 code, the
//! time the verify and whoami answers take, and the verifier's own counters,
//! encoded by `prometheus-client` in the OpenMetrics or Prometheus text format.
//! With Redis, also how long each change took to reach this node over pub/sub
//! (`cloro_invalidation_delay_seconds`), the measure of SPEC §8's bound.
//!
//! Labels are a fixed small set (five routes, the §4 codes and `OK`), so no
//! key, token, account id or client-chosen path can ever reach a label.
//!
//! The per-request counters are plain atomics in per-thread stripes rather
//! than `prometheus-client`'s `Family` and `Histogram`: those take a lock per
//! update (a read lock on the family map, a mutex in the histogram), and every
//! request would bounce the same cache line between cores, which the verifier
//! already measured to cost speed-up (see `cloro_keystore::StripedCounter`).
//! The stripes are summed at scrape time by a [`Collector`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use cloro_auth_core::ErrorCode;
use cloro_keystore::{Invalidation, InvalidationSink, Readiness, Verifier};
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::responses::{ApiError, Body, full};

/// `Content-Type` of the OpenMetrics text format, answered when the scraper
/// asks for it (Prometheus does).
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the verify-duration buckets: 1-2.5-5 steps from
/// 1 µs (a cache hit) to 1 s (far past the 250 ms store timeout).
const DURATION_BOUNDS: [f64; 19] = [
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
];
/// The same bounds in nanoseconds, so the hot path compares integers.
const DURATION_BOUNDS_NANOS: [u64; 19] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];
/// The finite buckets and `+Inf`.
const BUCKETS: usize = DURATION_BOUNDS.len() + 1;

/// `OK` and every SPEC §4 code.
const CODE_LABELS: usize = ErrorCode::ALL.len() + 1;

/// Stripes: enough that the two to a few dozen runtime threads rarely share one.
const STRIPES: usize = 16;

/// The `route` label: which part of SPEC §6 answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteLabel {
    /// `/v1/whoami`.
    Whoami,
    /// `/auth/verify[/…]`.
    Verify,
    /// Any other `/v1/*`.
    Gateway,
    /// `/admin/*`.
    Admin,
    /// Health, readiness, metrics, the OpenAPI document, and paths no
    /// route serves (they get `NOT_FOUND`).
    Ops,
}

impl RouteLabel {
    const ALL: [RouteLabel; 5] = [
        RouteLabel::Whoami,
        RouteLabel::Verify,
        RouteLabel::Gateway,
        RouteLabel::Admin,
        RouteLabel::Ops,
    ];

    /// The label of a request path, by prefix; never the path itself.
    pub(crate) fn of(path: &str) -> RouteLabel {
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if path == "/v1/whoami" {
            RouteLabel::Whoami
        } else if under("/auth/verify") {
            RouteLabel::Verify
        } else if under("/v1") {
            RouteLabel::Gateway
        } else if under("/admin") {
            RouteLabel::Admin
        } else {
            RouteLabel::Ops
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RouteLabel::Whoami => "whoami",
            RouteLabel::Verify => "verify",
            RouteLabel::Gateway => "gateway",
            RouteLabel::Admin => "admin",
            RouteLabel::Ops => "ops",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The SPEC §4 code of an error answer, set by [`ApiError::into_response`]
/// as a response extension so the router need not parse its own JSON.
/// Answers without one (successes, and whatever the upstream said) count as
/// `OK`: the server itself raised no error for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AnsweredCode(pub(crate) ErrorCode);

fn code_index(code: Option<ErrorCode>) -> usize {
    match code {
        None => 0,
        // `ErrorCode::ALL` lists every code; a code added to the enum but not
        // to the list would be a bug there, counted as an internal error here
        // rather than dropped.
        Some(code) => {
            ErrorCode::ALL
                .iter()
                .position(|known| *known == code)
                .unwrap_or(ErrorCode::ALL.len() - 1)
                + 1
        }
    }
}

fn code_label(index: usize) -> &'static str {
    match index.checked_sub(1) {
        None => "OK",
        Some(i) => ErrorCode::ALL
            .get(i)
            .map_or("INTERNAL_ERROR", |c| c.as_str()),
    }
}

/// Upper bounds (seconds) of the invalidation-delay buckets: from 1 ms to
/// well past the 1 s that SPEC §8 allows.
const PROPAGATION_BOUNDS: [f64; 12] = [
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Delays between a change's publication and its arrival here. A few per
/// admin action, far off the request path: plain shared atomics suffice.
#[derive(Debug, Default)]
pub(crate) struct PropagationDelays {
    /// Observations per bucket, `+Inf` last (not cumulative).
    buckets: [AtomicU64; PROPAGATION_BOUNDS.len() + 1],
    micros: AtomicU64,
}

impl PropagationDelays {
    fn observe(&self, delay: Duration) {
        let seconds = delay.as_secs_f64();
        let bucket = PROPAGATION_BOUNDS.partition_point(|bound| *bound < seconds);
        if let Some(count) = self.buckets.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// The cache as the invalidation listener sees it: every change goes to the
/// cache, and its delay, when the message carries one, to the metrics.
#[derive(Debug)]
pub(crate) struct MeasuredSink {
    cache: Arc<dyn InvalidationSink>,
    delays: Arc<PropagationDelays>,
}

impl MeasuredSink {
    pub(crate) fn new(cache: Arc<dyn InvalidationSink>, delays: Arc<PropagationDelays>) -> Self {
        MeasuredSink { cache, delays }
    }
}

impl InvalidationSink for MeasuredSink {
    fn invalidate(&self, change: Invalidation) {
        self.cache.invalidate(change);
    }

    fn invalidate_published(&self, change: Invalidation, delay: Option<Duration>) {
        self.cache.invalidate(change);
        if let Some(delay) = delay {
            self.delays.observe(delay);
        }
    }
}

/// One thread's share of the counts, alone on its cache lines.
#[repr(align(128))]
struct Stripe {
    /// `[route][code]` answers.
    requests: [[AtomicU64; CODE_LABELS]; RouteLabel::ALL.len()],
    /// Observations per bucket (not cumulative; the encoder sums them).
    check_buckets: [AtomicU64; BUCKETS],
    /// Sum of observations in nanoseconds.
    check_nanos: AtomicU64,
}

impl Default for Stripe {
    fn default() -> Self {
        Stripe {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            check_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            check_nanos: AtomicU64::new(0),
        }
    }
}

/// Hands each thread a stripe in turn.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
}

/// Called by the guard with each check's duration.
pub(crate) type CheckObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// What the request path records; shared with the scrape-time collector.
struct Recorded {
    stripes: Box<[Stripe; STRIPES]>,
}

impl Recorded {
    /// Records how long one check took.
    fn observe_check(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = DURATION_BOUNDS_NANOS.partition_point(|bound| *bound < nanos);
        let stripe = self.stripe();
        if let Some(count) = stripe.check_buckets.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        stripe.check_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorded").finish_non_exhaustive()
    }
}

impl Recorded {
    fn stripe(&self) -> &Stripe {
        &self.stripes[STRIPE.with(|stripe| *stripe) % STRIPES]
    }

    fn request_count(&self, route: RouteLabel, code: usize) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.requests[route.index()][code].load(Ordering::Relaxed))
            .sum()
    }
}

/// The server's metrics: cheap to record, rendered on scrape.
#[derive(Debug)]
pub(crate) struct Metrics {
    recorded: Arc<Recorded>,
    registry: Registry,
}

impl Metrics {
    /// Metrics of a server whose verifier is `verifier` and whose
    /// invalidation listener records into `propagation`.
    pub(crate) fn new(verifier: Arc<Verifier>, propagation: Arc<PropagationDelays>) -> Self {
        let recorded = Arc::new(Recorded {
            stripes: Box::new(std::array::from_fn(|_| Stripe::default())),
        });
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ScrapeCollector {
            recorded: recorded.clone(),
            verifier,
            propagation,
        }));
        Metrics { recorded, registry }
    }

    /// Counts one answer.
    pub(crate) fn record_request(&self, route: RouteLabel, code: Option<ErrorCode>) {
        self.recorded.stripe().requests[route.index()][code_index(code)]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// What the guard calls with the duration of each check, so the
    /// histogram times exactly the check on every route that runs one
    /// (whoami, verify and the gateway), never an upstream's time.
    pub(crate) fn check_observer(&self) -> CheckObserver {
        let recorded = Arc::clone(&self.recorded);
        Arc::new(move |elapsed| recorded.observe_check(elapsed))
    }

    /// The `GET /metrics` answer: OpenMetrics when the `Accept` field asks
    /// for it (as Prometheus does), else the Prometheus text format 0.0.4,
    /// which every scraper and `curl` reader understands.
    pub(crate) fn render(&self, request_headers: &HeaderMap, request_id: &str) -> Response<Body> {
        let openmetrics = request_headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| value.contains("application/openmetrics-text"));
        let mut text = String::with_capacity(4096);
        let (encoded, content_type) = if openmetrics {
            (
                prometheus_client::encoding::text::encode(&mut text, &self.registry),
                OPENMETRICS_CONTENT_TYPE,
            )
        } else {
            (
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry),
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )
        };
        if encoded.is_err() {
            return ApiError::new(
                ErrorCode::InternalError,
                "the metrics could not be encoded; this is a bug",
            )
            .into_response(request_id);
        }
        let mut response = Response::new(full(text));
        *response.status_mut() = StatusCode::OK;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

/// Reads the recorded stripes and the verifier at scrape time.
#[derive(Debug)]
struct ScrapeCollector {
    recorded: Arc<Recorded>,
    verifier: Arc<Verifier>,
    propagation: Arc<PropagationDelays>,
}

impl ScrapeCollector {
    fn encode_requests(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "cloro_requests",
            "Answers by route and error code (OK when the server raised no error).",
            None,
            MetricType::Counter,
        )?;
        for route in RouteLabel::ALL {
            for code in 0..CODE_LABELS {
                let count = self.recorded.request_count(route, code);
                // Only outcomes that happened: 110 zero series would bury
                // the ones that matter.
                if count == 0 {
                    continue;
                }
                let labels = [("route", route.as_str()), ("code", code_label(code))];
                ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn encode_check_duration(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let mut buckets: Vec<(f64, u64)> = DURATION_BOUNDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .map(|bound| (bound, 0))
            .collect();
        let mut nanos: u64 = 0;
        for stripe in self.recorded.stripes.iter() {
            for (bucket, count) in buckets.iter_mut().zip(&stripe.check_buckets) {
                bucket.1 += count.load(Ordering::Relaxed);
            }
            nanos = nanos.wrapping_add(stripe.check_nanos.load(Ordering::Relaxed));
        }
        // The count is the sum of the buckets, so `_count` always equals the
        // `+Inf` bucket even while requests race the scrape.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let mut metric = encoder.encode_descriptor(
            "cloro_verify_duration_seconds",
            "Time to answer /auth/verify and /v1/whoami: the guard's check and the small answer built from it.",
            None,
            MetricType::Histogram,
        )?;
        metric.encode_histogram::<NoLabelSet>(nanos as f64 / 1e9, count, &buckets, None)
    }

    fn encode_propagation(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = PROPAGATION_BOUNDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(&self.propagation.buckets)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let micros = self.propagation.micros.load(Ordering::Relaxed);
        let mut metric = encoder.encode_descriptor(
            "cloro_invalidation_delay_seconds",
            "Time from a change's publication on one node to its invalidation arriving on this one (wall clocks, so skew counts).",
            None,
            MetricType::Histogram,
        )?;
        metric.encode_histogram::<NoLabelSet>(micros as f64 / 1e6, count, &buckets, None)
    }

    fn encode_counter(
        encoder: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        value: u64,
    ) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(value);
        counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
    }
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.encode_requests(&mut encoder)?;
        self.encode_check_duration(&mut encoder)?;
        self.encode_propagation(&mut encoder)?;

        let stats = self.verifier.stats();
        let counters = [
            (
                "cloro_cache_hits",
                "Checks answered from the key cache (valid or known-unknown keys).",
                stats.cache_hits.get(),
            ),
            (
                "cloro_cache_misses",
                "Checks that needed a store read.",
                stats.cache_misses.get(),
            ),
            (
                "cloro_key_lookups",
                "Key lookups this node sent to the store (concurrent misses of one key share one).",
                stats.store_lookups.get(),
            ),
            (
                "cloro_lookups_refused",
                "Checks answered AUTH_UNAVAILABLE because the lookups in flight were at their bound.",
                stats.lookups_refused.get(),
            ),
            (
                "cloro_store_errors",
                "Store reads that failed or timed out.",
                stats.store_errors.get(),
            ),
            (
                "cloro_limiter_fallbacks",
                "Shared rate-limiter calls that failed and were answered by this node's limiter.",
                stats.limiter_fallbacks.get(),
            ),
        ];
        for (name, help, value) in counters {
            Self::encode_counter(&mut encoder, name, help, value)?;
        }

        let cache = self.verifier.cache();
        let known = u64::try_from(cache.known_count()).unwrap_or(u64::MAX);
        let mut entries = encoder.encode_descriptor(
            "cloro_cache_entries",
            "Key-cache entries: known keys, and unknown keys remembered as such (approximate).",
            None,
            MetricType::Gauge,
        )?;
        for (kind, value) in [("known", known), ("unknown", cache.unknown_count())] {
            let labels = [("kind", kind)];
            ConstGauge::new(value).encode(entries.encode_family(&labels)?)?;
        }
        let gauges = [
            (
                "cloro_failed_auth_addresses",
                "Client addresses (IPv6 prefixes) the failed-attempt guard is tracking.",
                self.verifier.failed_attempts().tracked(),
            ),
            (
                "cloro_lookups_in_flight",
                "Key lookups waiting for the store right now.",
                cache.pending_count(),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }

        let ready = match self.verifier.health().readiness() {
            Readiness::Ready => 1.0,
            Readiness::Degraded => 0.5,
            Readiness::NotReady => 0.0,
        };
        let gauge = ConstGauge::new(ready);
        gauge.encode(encoder.encode_descriptor(
            "cloro_store_ready",
            "Key store state as /readyz sees it: 1 ready, 0.5 degraded (cache serving), 0 never reached.",
            None,
            gauge.metric_type(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_by_prefix() {
        let cases = [
            ("/v1/whoami", "whoami"),
            ("/v1/whoami/x", "gateway"),
            ("/auth/verify", "verify"),
            ("/auth/verify/v1/run", "verify"),
            ("/auth/verifyx", "ops"),
            ("/v1/monitor", "gateway"),
            ("/v1", "gateway"),
            ("/v10", "ops"),
            ("/admin/v1/keys", "admin"),
            ("/metrics", "ops"),
            ("/", "ops"),
        ];
        for (path, label) in cases {
            assert_eq!(RouteLabel::of(path).as_str(), label, "{path}");
        }
    }

    #[test]
    fn code_labels_round_trip() {
        assert_eq!(code_label(code_index(None)), "OK");
        for code in ErrorCode::ALL {
            assert_eq!(code_label(code_index(Some(code))), code.as_str());
        }
    }

    #[test]
    fn bounds_agree() {
        for (seconds, nanos) in DURATION_BOUNDS.iter().zip(DURATION_BOUNDS_NANOS) {
            assert_eq!((seconds * 1e9).round() as u64, nanos);
        }
    }
}
