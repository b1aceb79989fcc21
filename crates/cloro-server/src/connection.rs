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
//! ([`InFlightBody`]) update, and the serving loop closes the connection at
//! [`Activity::deadline`]:
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
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use cloro_guard::BoxError;

/// No head has started since the connection went idle.
const NO_HEAD: u64 = u64::MAX;

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

/// What one connection is doing. Times are milliseconds since `opened`, in
/// atomics, so the I/O, the requests and the serving loop share it without
/// a lock.
#[derive(Debug)]
pub(crate) struct Activity {
    opened: Instant,
    in_flight: AtomicU32,
    /// When the last request ended (or the connection opened).
    idle_since: AtomicU64,
    /// When the first byte of a head arrived while idle; [`NO_HEAD`] if none.
    head_started: AtomicU64,
    /// When bytes last moved in either direction.
    last_progress: AtomicU64,
    /// Known to speak HTTP/2 (by ALPN or its preface): no head timeout.
    http2: AtomicBool,
    /// Whether any byte has been read yet (the first read tells HTTP/2).
    read_any: AtomicBool,
    /// Woken when the deadline moves earlier than the one the serving loop
    /// sleeps towards (the last request ended; a head started while idle,
    /// which swaps the idle timeout for the shorter header timeout), so
    /// the loop re-arms. Later deadlines need no wake: the loop re-checks
    /// when its sleep ends.
    rearm: Notify,
}

impl Activity {
    /// A connection accepted now; `http2` when ALPN already said so.
    pub(crate) fn new(http2: bool) -> Arc<Self> {
        Arc::new(Activity {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            // A new connection owes its first head from the start.
            head_started: AtomicU64::new(0),
            last_progress: AtomicU64::new(0),
            http2: AtomicBool::new(http2),
            read_any: AtomicBool::new(false),
            rearm: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    /// When the connection is to be closed if nothing changes.
    pub(crate) fn deadline(&self, timeouts: &Timeouts) -> Instant {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return self.at(self.last_progress.load(Ordering::Acquire)) + timeouts.stalled;
        }
        let head = self.head_started.load(Ordering::Acquire);
        if head != NO_HEAD && !self.http2.load(Ordering::Acquire) {
            return self.at(head) + timeouts.header;
        }
        self.at(self.idle_since.load(Ordering::Acquire)) + timeouts.idle
    }

    /// Resolves when the deadline may have moved earlier.
    pub(crate) async fn deadline_moved(&self) {
        self.rearm.notified().await;
    }

    fn read(&self, bytes: &[u8]) {
        let now = self.now_ms();
        self.last_progress.store(now, Ordering::Release);
        if !self.read_any.swap(true, Ordering::AcqRel) && bytes.starts_with(b"PRI ") {
            // The HTTP/2 connection preface: pings and settings from here
            // on are not a request head in progress.
            self.http2.store(true, Ordering::Release);
        }
        if self.in_flight.load(Ordering::Acquire) == 0
            && self
                .head_started
                .compare_exchange(NO_HEAD, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.rearm.notify_one();
        }
    }

    fn wrote(&self) {
        self.last_progress.store(self.now_ms(), Ordering::Release);
    }

    /// Counts a request in flight until the returned guard drops.
    pub(crate) fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.last_progress.store(self.now_ms(), Ordering::Release);
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
            activity.last_progress.store(now, Ordering::Release);
            activity.head_started.store(NO_HEAD, Ordering::Release);
            activity.rearm.notify_one();
        }
    }
}

/// A response body that keeps its request counted as in flight until the
/// body has been sent or dropped.
#[derive(Debug)]
pub(crate) struct InFlightBody<B> {
    inner: B,
    in_flight: Option<InFlight>,
}

impl<B> InFlightBody<B> {
    pub(crate) fn new(inner: B, in_flight: InFlight) -> Self {
        InFlightBody {
            inner,
            in_flight: Some(in_flight),
        }
    }
}

impl<B> Body for InFlightBody<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = frame {
            this.in_flight = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

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

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_owes_its_head_within_the_header_timeout() {
        let activity = Activity::new(false);
        assert_eq!(
            activity.deadline(&TIMEOUTS),
            activity.opened + TIMEOUTS.header
        );
        // Half a head arrives later: still counted from the accept.
        tokio::time::advance(Duration::from_secs(3)).await;
        activity.read(b"GET / HT");
        assert_eq!(
            activity.deadline(&TIMEOUTS),
            activity.opened + TIMEOUTS.header
        );
    }

    #[tokio::test(start_paused = true)]
    async fn between_requests_the_idle_timeout_applies_until_a_head_starts() {
        let activity = Activity::new(false);
        activity.read(b"GET / HTTP/1.1\r\n\r\n");
        let request = activity.request_started();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            activity.deadline(&TIMEOUTS),
            activity.opened + TIMEOUTS.stalled,
            "in flight: bounded by the last progress"
        );
        drop(request);
        let idle_at = Instant::now();
        assert_eq!(activity.deadline(&TIMEOUTS), idle_at + TIMEOUTS.idle);
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.read(b"GET /next");
        assert_eq!(
            activity.deadline(&TIMEOUTS),
            Instant::now() + TIMEOUTS.header
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_starting_while_idle_wakes_the_serving_loop() {
        let activity = Activity::new(false);
        activity.read(b"GET / HTTP/1.1\r\n\r\n");
        drop(activity.request_started());
        // The wake for the request's end, which the loop takes.
        activity.deadline_moved().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.read(b"GET /next");
        // The deadline is now the header timeout, much earlier than the
        // idle one the loop was sleeping towards: it must be told.
        tokio::time::timeout(Duration::ZERO, activity.deadline_moved())
            .await
            .expect("a head that started while idle did not re-arm the loop");
        // More of the same head moves nothing.
        activity.read(b" HTTP/1.1\r\n");
        assert!(
            tokio::time::timeout(Duration::ZERO, activity.deadline_moved())
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn http2_has_no_head_timeout() {
        let sniffed = Activity::new(false);
        sniffed.read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(sniffed.deadline(&TIMEOUTS), sniffed.opened + TIMEOUTS.idle);
        let by_alpn = Activity::new(true);
        assert_eq!(by_alpn.deadline(&TIMEOUTS), by_alpn.opened + TIMEOUTS.idle);
    }
}
