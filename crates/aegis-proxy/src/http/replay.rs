//! A request body that can be taken back for a retry as long as nobody has read from it.
//!
//! The upstream client consumes the request it is given, even when the connection fails before
//! a byte is written. [`Replayable`] parks the real body in a shared slot and moves it out on the
//! first poll; if the attempt fails before that, [`Reclaim::take`] gets the body back intact.
//! Once any frame has been polled, the body may have reached the upstream and is never replayed.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Method;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};

use crate::dial::UpstreamBody;
use crate::BoxError;

type Slot = Arc<Mutex<Option<UpstreamBody>>>;

/// The body handed to the upstream client.
pub struct Replayable {
    slot: Slot,
    taken: Option<UpstreamBody>,
}

/// The retry side: takes the body back if it was never read.
#[derive(Debug)]
pub struct Reclaim {
    slot: Slot,
    empty: bool,
}

/// Splits `body` into the sendable body and its reclaim handle.
pub fn replayable(body: UpstreamBody) -> (Replayable, Reclaim) {
    let empty = body.is_end_stream();
    let slot = Arc::new(Mutex::new(Some(body)));
    let reclaim = Reclaim {
        slot: slot.clone(),
        empty,
    };
    (Replayable { slot, taken: None }, reclaim)
}

fn lock(slot: &Slot) -> std::sync::MutexGuard<'_, Option<UpstreamBody>> {
    // A panic while holding this lock cannot leave the Option half-written.
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Reclaim {
    /// The body for another attempt: the original if it was never polled, a new empty body if
    /// it was empty anyway, otherwise `None` (part of it may have been sent).
    pub fn take(&self) -> Option<UpstreamBody> {
        if let Some(body) = lock(&self.slot).take() {
            return Some(body);
        }
        self.empty
            .then(|| Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync())
    }
}

impl Body for Replayable {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.taken.is_none() {
            let body = lock(&self.slot).take();
            self.taken = body;
        }
        match self.taken.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.taken {
            Some(body) => body.is_end_stream(),
            None => lock(&self.slot).as_ref().is_none_or(Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.taken {
            Some(body) => body.size_hint(),
            None => lock(&self.slot)
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), Body::size_hint),
        }
    }
}

/// RFC 9110 §9.2.2: methods whose repetition has the same effect as one request.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

#[cfg(test)]
mod tests {
    use http_body_util::Full;

    use super::*;

    fn body(text: &'static str) -> UpstreamBody {
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|e| match e {})
            .boxed_unsync()
    }

    #[tokio::test]
    async fn an_unread_body_comes_back_whole() {
        let (sent, reclaim) = replayable(body("payload"));
        assert_eq!(sent.size_hint().exact(), Some(7));
        drop(sent);
        let again = reclaim.take().expect("never polled");
        let bytes = again.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"payload");
    }

    #[tokio::test]
    async fn a_polled_body_is_never_replayed() {
        let (mut sent, reclaim) = replayable(body("payload"));
        let first = sent.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "payload");
        assert!(reclaim.take().is_none());
    }

    #[tokio::test]
    async fn an_empty_body_is_always_replayable() {
        let empty = Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync();
        let (mut sent, reclaim) = replayable(empty);
        assert!(sent.frame().await.is_none());
        assert!(reclaim.take().unwrap().is_end_stream());
    }
}
