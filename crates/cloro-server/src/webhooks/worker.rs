//! The delivery worker: every second it fans the outbox out to the
//! endpoints that want each event, then sends what is due, at most
//! [`IN_FLIGHT`] at a time, and writes each attempt's outcome.
//!
//! An attempt is a `POST` of the event's body with the Standard Webhooks
//! headers (`webhook-id`: the event id, the same on every attempt, so a
//! receiver can drop repeats; `webhook-timestamp`; `webhook-signature`).
//! It is bounded: [`ATTEMPT_TIMEOUT`] for all of it, redirects never
//! followed, at most [`MAX_RESPONSE_BYTES`] of the answer read. A 2xx is
//! delivered; anything else is tried again after [`backoff`] (exponential,
//! with jitter) until a day has passed since the event, then it is failed.
//! Deliveries to one endpoint are independent: a slow receiver holds up
//! only its own attempts.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use cloro_auth_core::wire::DeliveryStatus;
use cloro_keystore::{Clock, DELIVERY_RETENTION, Delivery, LogLimit, WebhookRecord};
use futures_util::StreamExt as _;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

use super::Webhooks;
use super::target::{VettedResolver, check_url};
use crate::background::{StoppableTask, stopping};

/// How often the worker looks at the outbox and the due deliveries.
const TICK: Duration = Duration::from_secs(1);
/// Events fanned out and deliveries sent per tick at most.
const PER_TICK: usize = 200;
/// Attempts in flight at once.
const IN_FLIGHT: usize = 32;
/// One attempt, from connecting to the last byte read.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an answer is read (then the connection is dropped).
const MAX_RESPONSE_BYTES: usize = 4 * 1024;
/// How often finished deliveries past [`DELIVERY_RETENTION`] are pruned,
/// in ticks, and how many at most each time.
const PRUNE_EVERY_TICKS: u64 = 60;
const PRUNE_AT_MOST: usize = 1000;
/// How long an event is tried for (SPEC §12: 24 hours).
const RETRY_FOR: SignedDuration = SignedDuration::from_hours(24);
/// The waits after the first, second, … failed attempt; the last repeats.
const BACKOFF: [Duration; 8] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(2 * 60),
    Duration::from_secs(10 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(60 * 60),
    Duration::from_secs(2 * 60 * 60),
    Duration::from_secs(4 * 60 * 60),
];

type DeliveryClient = Client<HttpsConnector<HttpConnector<VettedResolver>>, Full<Bytes>>;

/// The wait after `attempts` failed attempts, with up to a fifth more or
/// less at random, so that endpoints that failed together are not all
/// tried again in the same second.
pub(crate) fn backoff(attempts: u32, jitter: u32) -> Duration {
    let index = usize::try_from(attempts.saturating_sub(1)).unwrap_or(usize::MAX);
    let base = BACKOFF[index.min(BACKOFF.len() - 1)];
    // `jitter` spread over ±20 %: 0 gives 0.8×, u32::MAX about 1.2×.
    let factor = 0.8 + 0.4 * (f64::from(jitter) / f64::from(u32::MAX));
    base.mul_f64(factor)
}

/// The worker's state; [`Worker::spawn`] runs it until its handle is
/// stopped or dropped. It holds the webhooks (and through them the store)
/// only weakly, and strongly only during a pass; [`StoppableTask::stop`]
/// waits for that pass to let go, so that a store reopened right after
/// (a restart in one process) is never still held.
pub(crate) struct Worker {
    webhooks: Weak<Webhooks>,
    allow_private: bool,
    clock: Clock,
    client: DeliveryClient,
}

impl Worker {
    pub(crate) fn new(webhooks: &Arc<Webhooks>, clock: Clock) -> Self {
        let mut tcp = HttpConnector::new_with_resolver(VettedResolver {
            allow_private: webhooks.allow_private,
        });
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(ATTEMPT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::outbound::tls_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        Worker {
            webhooks: Arc::downgrade(webhooks),
            allow_private: webhooks.allow_private,
            clock,
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Runs the worker in the background.
    /// Runs the worker. Stopping it waits for a store call under way (a
    /// blocking store call cannot be cut short anyway); sends under way
    /// are dropped unrecorded, and their claims lapse after the lease, so
    /// they are sent again (receivers drop repeats by `webhook-id`).
    pub(crate) fn spawn(self) -> StoppableTask {
        StoppableTask::spawn(|stopped| async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ticks: u64 = 0;
            loop {
                let mut watching = stopped.clone();
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stopping(&mut watching) => return,
                }
                let Some(webhooks) = self.webhooks.upgrade() else {
                    return;
                };
                if ticks.is_multiple_of(PRUNE_EVERY_TICKS) {
                    self.prune(&webhooks).await;
                }
                ticks = ticks.wrapping_add(1);
                self.run_once(&webhooks, stopped.clone()).await;
                if *stopped.borrow() {
                    return;
                }
            }
        })
    }

    /// One pass: fan out, then send what is due. Store failures are logged
    /// (once a second at most) and the pass is tried again next tick.
    async fn run_once(&self, webhooks: &Webhooks, stopped: watch::Receiver<bool>) {
        static STORE_FAILED: LogLimit = LogLimit::per_second();
        if let Err(error) = self.pass(webhooks, stopped).await
            && let Some(suppressed) = STORE_FAILED.admit()
        {
            tracing::warn!(%error, suppressed, "webhook delivery pass failed; it runs again in a second");
        }
    }

    /// Drops finished deliveries older than [`DELIVERY_RETENTION`], so an
    /// endpoint's log stays bounded.
    async fn prune(&self, webhooks: &Webhooks) {
        let Some(before) = SignedDuration::try_from(DELIVERY_RETENTION)
            .ok()
            .and_then(|keep| self.clock.now().checked_sub(keep).ok())
        else {
            return;
        };
        match webhooks.store.prune_deliveries(before, PRUNE_AT_MOST).await {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "old webhook deliveries pruned"),
            Err(error) => {
                static PRUNE_FAILED: LogLimit = LogLimit::per_second();
                if let Some(suppressed) = PRUNE_FAILED.admit() {
                    tracing::warn!(%error, suppressed, "pruning old webhook deliveries failed; tried again in a minute");
                }
            }
        }
    }

    /// Store calls run to the end; only the sends give way to a stop.
    async fn pass(
        &self,
        webhooks: &Webhooks,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<(), cloro_keystore::StoreError> {
        let store = &webhooks.store;
        let now = self.clock.now();
        let endpoints = store.webhooks().await?;
        for event in store.outbox(now, PER_TICK).await? {
            let wanted: Vec<String> = endpoints
                .iter()
                .filter(|endpoint| endpoint.wants(&event))
                .map(|endpoint| endpoint.info.id.clone())
                .collect();
            store.fan_out(&event, &wanted, now).await?;
        }
        let due = store.due(now, PER_TICK).await?;
        if due.is_empty() {
            return Ok(());
        }
        let by_id: HashMap<&str, &WebhookRecord> = endpoints
            .iter()
            .map(|endpoint| (endpoint.info.id.as_str(), endpoint))
            .collect();
        let sends = futures_util::stream::iter(due)
            .map(|delivery| {
                let endpoint = by_id.get(delivery.webhook_id.as_str()).copied();
                self.attempt(webhooks, delivery, endpoint)
            })
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<_>>();
        let attempts = tokio::select! {
            attempts = sends => attempts,
            () = stopping(&mut stopped) => return Ok(()),
        };
        for delivery in attempts {
            store.record_attempt(&delivery).await?;
        }
        Ok(())
    }

    /// Sends `delivery` once and answers it updated.
    async fn attempt(
        &self,
        webhooks: &Webhooks,
        mut delivery: Delivery,
        endpoint: Option<&WebhookRecord>,
    ) -> Delivery {
        // Deleted since: recording is a no-op, so just give it back.
        let Some(endpoint) = endpoint else {
            return delivery;
        };
        let sent_at = self.clock.now();
        let outcome = self.send(webhooks, &delivery, endpoint, sent_at).await;
        delivery.attempts = delivery.attempts.saturating_add(1);
        delivery.last_attempt_at = Some(sent_at);
        match outcome {
            Ok(status) if (200..300).contains(&status) => {
                delivery.status = DeliveryStatus::Delivered;
                delivery.last_status = Some(status);
                delivery.last_error = None;
                delivery.next_attempt_at = None;
                return delivery;
            }
            Ok(status) => {
                delivery.last_status = Some(status);
                delivery.last_error = Some(if (300..400).contains(&status) {
                    format!("the endpoint answered {status}; redirects are not followed")
                } else {
                    format!("the endpoint answered {status}")
                });
            }
            Err(Failure::Final(reason)) => {
                delivery.last_status = None;
                delivery.last_error = Some(reason);
                delivery.status = DeliveryStatus::Failed;
                delivery.next_attempt_at = None;
                return delivery;
            }
            Err(Failure::Again(reason)) => {
                delivery.last_status = None;
                delivery.last_error = Some(reason);
            }
        }
        let mut jitter = [0u8; 4];
        let _ = getrandom::fill(&mut jitter);
        let wait = backoff(delivery.attempts, u32::from_le_bytes(jitter));
        let next = SignedDuration::try_from(wait)
            .ok()
            .and_then(|wait| sent_at.checked_add(wait).ok());
        let gives_up = delivery
            .event
            .at
            .checked_add(RETRY_FOR)
            .unwrap_or(Timestamp::MAX);
        match next {
            Some(next) if next <= gives_up => delivery.next_attempt_at = Some(next),
            _ => {
                delivery.status = DeliveryStatus::Failed;
                delivery.next_attempt_at = None;
            }
        }
        delivery
    }

    /// One HTTP attempt: the status the endpoint answered, or why there
    /// was none. No reason quotes the URL (it may hold a token).
    async fn send(
        &self,
        webhooks: &Webhooks,
        delivery: &Delivery,
        endpoint: &WebhookRecord,
        at: Timestamp,
    ) -> Result<u16, Failure> {
        let uri = check_url(&endpoint.info.url, self.allow_private)
            .map_err(|error| Failure::Final(error.message().to_owned()))?;
        let secret = webhooks
            .key
            .open(&endpoint.info.id, &endpoint.sealed_secret)
            .ok_or_else(|| {
                Failure::Again(
                    "this node cannot open the endpoint's secret: every node needs the same --webhook-key-file"
                        .to_owned(),
                )
            })?;
        let timestamp = u64::try_from(at.as_second()).unwrap_or(0);
        let body = Bytes::from(delivery.event.body.clone());
        let signature = secret.sign(&delivery.event.id, timestamp, &body);
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static("cloro-webhooks/1"))
            .header("webhook-id", delivery.event.id.as_str())
            .header("webhook-timestamp", timestamp)
            .header("webhook-signature", signature)
            .body(Full::new(body))
            .map_err(|_| Failure::Final("the event cannot be put in a request".to_owned()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| Failure::Again(connect_reason(&error)))?;
            let status = response.status().as_u16();
            // Read a little of the answer, so a short one keeps the
            // connection; a long or endless one is cut off here.
            let _ = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await;
            Ok(status)
        };
        tokio::time::timeout(ATTEMPT_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(Failure::Again(format!(
                    "no answer within {} s",
                    ATTEMPT_TIMEOUT.as_secs()
                )))
            })
    }
}

/// Why an attempt got no status.
enum Failure {
    /// Worth trying again later.
    Again(String),
    /// Never going to work (the URL is refused): the delivery fails now.
    Final(String),
}

/// The reason of a failed connection, without the URL.
fn connect_reason(error: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::PermissionDenied {
                return super::target::TargetError::Private.message().to_owned();
            }
            return format!("cannot connect: {}", io.kind());
        }
        source = cause.source();
    }
    if error.is_connect() {
        "cannot connect to the endpoint".to_owned()
    } else {
        "the endpoint closed the connection without an answer".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_bounded_jitter() {
        let middle = backoff(1, u32::MAX / 2).as_secs_f64();
        assert!((4.99..5.01).contains(&middle), "{middle}");
        assert!(backoff(1, 0) >= Duration::from_secs(4));
        assert!(backoff(1, u32::MAX) <= Duration::from_secs(6));
        assert!(backoff(2, 0) > backoff(1, u32::MAX));
        assert_eq!(backoff(100, 0), backoff(8, 0), "the last wait repeats");
        assert_eq!(backoff(0, 0), backoff(1, 0));
    }
}
