//! A body that holds something until it ends: the gateway's concurrency
//! permit, a connection's in-flight count. Freed when the last frame or an
//! error has been read, rather than whenever hyper gets round to dropping
//! the body, and in any case when it is dropped (the client went away).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use cloro_guard::BoxError;

/// `inner`, holding `held` until it ends or is dropped.
#[derive(Debug)]
pub(crate) struct HeldUntilEnd<B, T> {
    inner: B,
    held: Option<T>,
}

impl<B, T> HeldUntilEnd<B, T> {
    pub(crate) fn new(inner: B, held: T) -> Self {
        HeldUntilEnd {
            inner,
            held: Some(held),
        }
    }
}

impl<B, T> Body for HeldUntilEnd<B, T>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
    T: Unpin,
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
            this.held = None;
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
