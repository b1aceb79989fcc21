//! `--body-timeout` (SPEC §9): a request body may pause at most this long
//! between two pieces, so a client that trickles (or stops sending) a body
//! cannot hold a request, and whatever it holds upstream, forever.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use cloro_guard::BoxError;

/// The body paused longer than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeout(pub Duration);

impl fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body paused for more than {} s; send it without stalling",
            self.0.as_secs_f64()
        )
    }
}

impl std::error::Error for BodyTimeout {}

/// A request body that fails with [`BodyTimeout`] when no frame arrives
/// within the timeout of the previous one (or of the first poll).
#[derive(Debug)]
pub(crate) struct TimeoutBody<B> {
    inner: B,
    timeout: Duration,
    /// Armed only while the inner body is pending, so a body that arrives
    /// in one piece (or a request without one) never builds a timer.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> TimeoutBody<B> {
    /// `inner`, allowed to pause at most `timeout`.
    pub(crate) fn new(inner: B, timeout: Duration) -> Self {
        TimeoutBody {
            inner,
            timeout,
            timer: None,
        }
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let timer = this.timer.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + timeout))
                });
                ready!(timer.as_mut().poll(cx));
                this.timer = None;
                Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use http_body_util::channel::Channel;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_after_the_timeout() {
        let (mut sender, body) = Channel::<Bytes, BoxError>::new(4);
        let mut body = TimeoutBody::new(body, Duration::from_secs(30));
        sender.send_data(Bytes::from_static(b"a")).await.unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        // Twenty-nine seconds of silence, then a piece: still fine.
        let waiting = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(29)).await;
            sender.send_data(Bytes::from_static(b"b")).await.unwrap();
            sender
        });
        let second = body.frame().await.unwrap().unwrap();
        assert_eq!(second.into_data().unwrap(), "b");
        let _sender = waiting.await.unwrap();
        // Then silence past the timeout.
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.is::<BodyTimeout>(), "{error}");
    }

    #[test]
    fn the_timer_is_only_armed_when_waiting() {
        let mut body = TimeoutBody::new(
            http_body_util::Full::new(Bytes::from_static(b"x")),
            Duration::from_secs(1),
        );
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let frame = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(matches!(frame, Poll::Ready(Some(Ok(_)))));
        assert!(body.timer.is_none());
        let end = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(matches!(end, Poll::Ready(None)));
        assert!(body.timer.is_none());
    }
}
