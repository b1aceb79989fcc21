//! One client connection's bounds in time (SPEC §9 `--header-timeout`,
//! `--idle-timeout`): what the connection is doing, as seen from its bytes
//! and its requests, and when it has done nothing for too long.
//!
//! hyper's own HTTP/1 header timeout cannot serve here: it starts whenever
//! hyper waits for a head, so it also closes idle keep-alive connections
//! after the (short) header timeout, and it does not run at all while
//! hyper-util's auto builder is still sniffing for the HTTP/2 preface, which
//! is exactly where a silent connection sits. So each connection carries an
//! [`Activity`] that its I/O ([`TrackedIo`]) and its requests
//! ([`InFlightBody`]) update, and a watchdog task of its own closes the
//! connection at [`Activity::deadline`] (through [`Closing`], so the task
//! that polls the connection does nothing extra per wake-up):
//!
//! - no request in flight, part of a head received (or nothing yet on a
//!   new connection), HTTP/1: `header_timeout` from the first byte of that
//!   head (from the accept on a new connection);
//! - no request in flight otherwise (a keep-alive HTTP/1 connection between
//!   requests, an HTTP/2 connection with no open stream): `idle_timeout`
//!   from the end of the last request;
//! - requests in flight: no progress in either direction for the longest of
//!   the idle, body and upstream timeouts (a client that stops reading its
//!   answer must not hold the connection, and what feeds it, for ever).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// No head has started since the connection went idle.
const NO_HEAD: u64 = u64::MAX;
/// The watchdog is not sleeping towards any deadline.
const UNARMED: u64 = u64::MAX;

/// The time bounds of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// For a request head, from its first byte.
    pub(crate) header: Duration,
    /// For a connection with no request in flight.
    pub(crate) idle: Duration,
    /// For a connection whose requests make no progress.
    pub(crate) stalled: Duration,
}

/// What one connection is doing, shared without a lock by its I/O, its
/// requests and its watchdog. Times are milliseconds since `opened`.
///
/// The hot path (every read, write and request) only bumps counters; the
/// clock is read twice a request at most (when a head starts while idle,
/// and when the last request ends), and the watchdog is woken only when a
/// deadline moves *earlier* than the one it sleeps towards. A later one it
/// finds by itself when its sleep ends.
#[derive(Debug)]
pub(crate) struct Activity {
    opened: Instant,
    timeouts: Timeouts,
    in_flight: AtomicU32,
    /// When the last request ended (or the connection opened).
    idle_since: AtomicU64,
    /// When the first byte of a head arrived while idle; [`NO_HEAD`] if none.
    head_started: AtomicU64,
    /// Reads and writes that moved bytes, and requests started: the watchdog
    /// compares it to tell a stalled connection from a busy one.
    progress: AtomicU64,
    /// Known to speak HTTP/2 (by ALPN or its preface): no head timeout.
    http2: AtomicBool,
    /// Whether any byte has been read yet (the first read tells HTTP/2).
    read_any: AtomicBool,
    /// The deadline the watchdog sleeps towards, or [`UNARMED`].
    armed_until: AtomicU64,
    /// Wakes the watchdog when a deadline moved earlier than `armed_until`.
    rearm: Notify,
}

/// The watchdog's record of progress: the count it last saw, and when.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    count: u64,
    at_ms: u64,
}

impl Activity {
    /// A connection accepted now; `http2` when ALPN already said so.
    pub(crate) fn new(http2: bool, timeouts: Timeouts) -> Arc<Self> {
        Arc::new(Activity {
            opened: Instant::now(),
            timeouts,
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            // A new connection owes its first head from the start.
            head_started: AtomicU64::new(0),
            progress: AtomicU64::new(0),
            http2: AtomicBool::new(http2),
            read_any: AtomicBool::new(false),
            armed_until: AtomicU64::new(UNARMED),
            rearm: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(UNARMED - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    fn ms(duration: Duration) -> u64 {
        u64::try_from(duration.as_millis()).unwrap_or(UNARMED - 1)
    }

    /// When the connection is to be closed if nothing changes. `seen` is
    /// the watchdog's own record of progress, updated here.
    pub(crate) fn deadline(&self, seen: &mut Seen) -> Instant {
        let timeouts = &self.timeouts;
        if self.in_flight.load(Ordering::Acquire) > 0 {
            let count = self.progress.load(Ordering::Acquire);
            if count != seen.count {
                *seen = Seen {
                    count,
                    at_ms: self.now_ms(),
                };
            }
            return self.at(seen.at_ms) + timeouts.stalled;
        }
        let head = self.head_started.load(Ordering::Acquire);
        if head != NO_HEAD && !self.http2.load(Ordering::Acquire) {
            return self.at(head) + timeouts.header;
        }
        self.at(self.idle_since.load(Ordering::Acquire)) + timeouts.idle
    }

    /// The longest the watchdog should sleep: the shorter of the head and
    /// idle timeouts (see `serve::watch`).
    pub(crate) fn recheck(&self) -> Duration {
        self.timeouts.header.min(self.timeouts.idle)
    }

    /// Records the deadline the watchdog now sleeps towards.
    pub(crate) fn arm(&self, deadline: Instant) {
        let ms = Self::ms(deadline.saturating_duration_since(self.opened));
        self.armed_until.store(ms, Ordering::Release);
    }

    /// Wakes the watchdog if `deadline_ms` is earlier than its own.
    fn moved_to(&self, deadline_ms: u64) {
        if deadline_ms < self.armed_until.load(Ordering::Acquire) {
            self.rearm.notify_one();
        }
    }

    /// Resolves when a deadline moved earlier than the armed one.
    pub(crate) async fn deadline_moved(&self) {
        self.rearm.notified().await;
    }

    fn read(&self, bytes: &[u8]) {
        self.progress.fetch_add(1, Ordering::AcqRel);
        if !self.read_any.load(Ordering::Relaxed) && !self.read_any.swap(true, Ordering::AcqRel) {
            if bytes.starts_with(b"PRI ") {
                // The HTTP/2 connection preface: pings and settings from
                // here on are not a request head in progress.
                self.http2.store(true, Ordering::Release);
            }
            return;
        }
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Acquire) == NO_HEAD
        {
            let now = self.now_ms();
            let started = self
                .head_started
                .compare_exchange(NO_HEAD, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            if started && !self.http2.load(Ordering::Acquire) {
                self.moved_to(now.saturating_add(Self::ms(self.timeouts.header)));
            }
        }
    }

    fn wrote(&self) {
        self.progress.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts a request in flight until the returned guard drops.
    pub(crate) fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.progress.fetch_add(1, Ordering::AcqRel);
        InFlight {
            activity: Arc::clone(self),
        }
    }
}

/// One request in flight on a connection.
#[derive(Debug)]
pub(crate) struct InFlight {
    activity: Arc<Activity>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.activity;
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let now = activity.now_ms();
            activity.idle_since.store(now, Ordering::Release);
            activity.head_started.store(NO_HEAD, Ordering::Release);
            activity.moved_to(now.saturating_add(Activity::ms(activity.timeouts.idle)));
        }
    }
}

/// How the watchdog tells the connection's task to close.
#[derive(Debug, Default)]
pub(crate) struct Closing {
    level: AtomicU8,
    task: AtomicWaker,
}

/// Finish what is in flight, then close (HTTP/2: GOAWAY).
pub(crate) const GRACEFULLY: u8 = 1;
/// Drop the connection now.
pub(crate) const AT_ONCE: u8 = 2;

impl Closing {
    /// Asks the connection to close at `level` (never less than asked before).
    pub(crate) fn close(&self, level: u8) {
        self.level.fetch_max(level, Ordering::AcqRel);
        self.task.wake();
    }

    /// What the connection's task was asked; registers it to be woken.
    pub(crate) fn poll(&self, cx: &Context<'_>) -> u8 {
        self.task.register(cx.waker());
        self.level.load(Ordering::Acquire)
    }
}

/// A response body that keeps its request counted as in flight until the
/// body has been sent or dropped.
pub(crate) type InFlightBody<B> = crate::held_body::HeldUntilEnd<B, InFlight>;

/// A connection's I/O, reporting the bytes that move to its [`Activity`].
#[derive(Debug)]
pub(crate) struct TrackedIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> TrackedIo<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>) -> Self {
        TrackedIo { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result
            && buf.filled().len() > before
        {
            this.activity.read(&buf.filled()[before..]);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = result
            && written > 0
        {
            this.activity.wrote();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = result
            && written > 0
        {
            this.activity.wrote();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        stalled: Duration::from_secs(60),
    };

    fn activity(http2: bool) -> Arc<Activity> {
        Activity::new(http2, TIMEOUTS)
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_owes_its_head_within_the_header_timeout() {
        let activity = activity(false);
        let mut seen = Seen::default();
        assert_eq!(
            activity.deadline(&mut seen),
            activity.opened + TIMEOUTS.header
        );
        // Half a head arrives later: still counted from the accept.
        tokio::time::advance(Duration::from_secs(3)).await;
        activity.read(b"GET / HT");
        assert_eq!(
            activity.deadline(&mut seen),
            activity.opened + TIMEOUTS.header
        );
    }

    #[tokio::test(start_paused = true)]
    async fn between_requests_the_idle_timeout_applies_until_a_head_starts() {
        let activity = activity(false);
        let mut seen = Seen::default();
        activity.read(b"GET / HTTP/1.1\r\n\r\n");
        let request = activity.request_started();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            activity.deadline(&mut seen),
            Instant::now() + TIMEOUTS.stalled,
            "in flight: bounded from when the watchdog saw progress"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            activity.deadline(&mut seen),
            activity.opened + Duration::from_secs(2) + TIMEOUTS.stalled,
            "no progress since: the same deadline"
        );
        drop(request);
        let idle_at = Instant::now();
        assert_eq!(activity.deadline(&mut seen), idle_at + TIMEOUTS.idle);
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.read(b"GET /next");
        assert_eq!(
            activity.deadline(&mut seen),
            Instant::now() + TIMEOUTS.header
        );
    }

    #[tokio::test(start_paused = true)]
    async fn only_an_earlier_deadline_wakes_the_watchdog() {
        let activity = activity(false);
        let mut seen = Seen::default();
        activity.read(b"GET / HTTP/1.1\r\n\r\n");
        let request = activity.request_started();
        activity.arm(activity.deadline(&mut seen));
        drop(request);
        // The idle deadline (end + 60 s) is no earlier than the stalled one
        // armed (start + 60 s): no wake.
        assert!(
            tokio::time::timeout(Duration::ZERO, activity.deadline_moved())
                .await
                .is_err()
        );
        activity.arm(activity.deadline(&mut seen));
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.read(b"GET /next");
        // The header deadline is earlier than the idle one armed: a wake.
        tokio::time::timeout(Duration::ZERO, activity.deadline_moved())
            .await
            .expect("a head that started while idle did not re-arm the watchdog");
        // More of the same head moves nothing.
        activity.arm(activity.deadline(&mut seen));
        activity.read(b" HTTP/1.1\r\n");
        assert!(
            tokio::time::timeout(Duration::ZERO, activity.deadline_moved())
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn http2_has_no_head_timeout() {
        let mut seen = Seen::default();
        let sniffed = activity(false);
        sniffed.read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(sniffed.deadline(&mut seen), sniffed.opened + TIMEOUTS.idle);
        let by_alpn = activity(true);
        assert_eq!(by_alpn.deadline(&mut seen), by_alpn.opened + TIMEOUTS.idle);
    }

    #[test]
    fn closing_only_grows() {
        let closing = Closing::default();
        closing.close(AT_ONCE);
        closing.close(GRACEFULLY);
        let waker = std::task::Waker::noop();
        assert_eq!(closing.poll(&Context::from_waker(waker)), AT_ONCE);
    }
}
