use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Most informational responses queued for one request and not yet written.
const MAX_QUEUED: usize = 16;

/// Sends 1xx informational responses (103 Early Hints, for example) ahead of a request's final
/// response, from a server's service.
///
/// The HTTP/1 and HTTP/2 servers give one to every request that may receive them (not
/// HTTP/1.0 ones: RFC 9110 §15.2), through its body:
/// [`Incoming::take_informational`](crate::body::Incoming::take_informational). What is sent
/// goes out, in order, before the final response; once the final response head is written,
/// [`send`](Self::send) refuses.
///
/// # Example
///
/// ```
/// # async fn service(req: hyper::Request<hyper::body::Incoming>) {
/// # let mut req = req;
/// if let Some(hints) = req.body_mut().take_informational() {
///     let early_hints = http::Response::builder()
///         .status(103)
///         .header("link", "</style.css>; rel=preload; as=style")
///         .body(())
///         .unwrap();
///     let _ = hints.send(early_hints);
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct InformationalSender(Arc<Mutex<Queue>>);

/// The server's end: what the service sent, in order. hyper's servers make their own; a
/// server on another transport (HTTP/3) makes a pair with [`InformationalSender::channel`].
#[derive(Debug)]
pub struct InformationalReceiver(Arc<Mutex<Queue>>);

#[derive(Debug, Default)]
struct Queue {
    pending: VecDeque<http::Response<()>>,
    waker: Option<Waker>,
    closed: bool,
}

impl InformationalSender {
    /// A sender and the receiver its responses go to, for a server that writes them itself.
    pub fn channel() -> (InformationalSender, InformationalReceiver) {
        let queue = Arc::new(Mutex::new(Queue::default()));
        (
            InformationalSender(queue.clone()),
            InformationalReceiver(queue),
        )
    }

    /// Queues `response` to be written before the final response.
    ///
    /// Gives it back if its status is not 1xx, is 100 (hyper answers `Expect: 100-continue`
    /// itself) or 101 (upgrades have their own API), if the final response has been written
    /// already, or if 16 informational responses are still waiting to be written.
    pub fn send(&self, response: http::Response<()>) -> Result<(), http::Response<()>> {
        let status = response.status().as_u16();
        if !(102..200).contains(&status) {
            return Err(response);
        }
        let mut queue = match self.0.lock() {
            Ok(queue) => queue,
            Err(_) => return Err(response),
        };
        if queue.closed || queue.pending.len() >= MAX_QUEUED {
            return Err(response);
        }
        queue.pending.push_back(response);
        if let Some(waker) = queue.waker.take() {
            waker.wake();
        }
        Ok(())
    }
}

impl InformationalReceiver {
    /// The next informational response, or `Pending` (registering `cx`) when none is queued.
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<http::Response<()>> {
        let Ok(mut queue) = self.0.lock() else {
            return Poll::Pending;
        };
        match queue.pending.pop_front() {
            Some(response) => Poll::Ready(response),
            None => {
                if !queue.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    queue.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// The final response is being written: later sends are refused, queued ones dropped.
    pub fn close(&self) {
        if let Ok(mut queue) = self.0.lock() {
            queue.closed = true;
            queue.pending.clear();
            queue.waker = None;
        }
    }
}

impl Drop for InformationalReceiver {
    fn drop(&mut self) {
        self.close();
    }
}
