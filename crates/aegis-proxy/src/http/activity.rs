//! What a hyper-served connection (HTTP/1.1 general path, HTTP/2) has in flight: the count the
//! connection's idle timeout looks at ([`Activity`]), and the stream idle timeout: a
//! response whose body makes no progress in either direction for the listener's
//! `stream_idle_timeout` is cut off, which frees its cluster slot, its upstream connection and
//! its place in the connection's in-flight count, as Envoy's `stream_idle_timeout` does.
//!
//! hyper polls a response body only when the client's flow-control window has room, so a
//! client that never reads would never let the body see a timer. Instead each connection
//! keeps a [`Watchdog`] that its serving loop sweeps: a stalled stream's body is taken out
//! from under hyper and dropped; hyper's next poll finds it gone and resets the stream.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::Instant;

use crate::{Body, BoxError};

/// Sweeps per stream idle timeout: a stream is cut off once this many sweeps in a row saw no
/// progress, that is after between 1 and 1.25 timeouts without any.
const QUIET_SWEEPS: u8 = 4;

/// The streams of one connection and their progress.
#[derive(Debug)]
pub(super) struct Watchdog {
    timeout: Duration,
    streams: Mutex<Streams>,
}

/// The registered streams, finished ones included until the next prune.
#[derive(Debug, Default)]
struct Streams {
    list: Vec<Entry>,
    /// Length at which finished streams are dropped from `list`: twice the live ones after
    /// the last prune, so pruning costs O(1) per request and the list never outgrows twice
    /// the streams in flight (plus [`MIN_PRUNE`]).
    prune_at: usize,
}

#[derive(Debug)]
struct Entry {
    stream: Weak<Stream>,
    /// Sweeps in a row that found no progress.
    quiet: u8,
}

/// The list is never pruned below this length.
const MIN_PRUNE: usize = 64;

/// One request's progress and what it holds until its response ends.
pub(super) struct Stream {
    /// The response head arrived (before it, the request timeout applies).
    armed: AtomicBool,
    /// A body frame moved, in either direction, since the last sweep: a flag rather than a
    /// timestamp, so progress costs no clock read.
    moved: AtomicBool,
    /// The response body, and whatever must be released with it.
    held: Mutex<Option<Held>>,
}

/// What a stream gives back when it is cut off: the response body (holding the cluster slot
/// and the upstream connection) and the count of the request as in flight.
struct Held {
    body: Body,
    _in_flight: InFlight,
}

impl Watchdog {
    /// A watchdog cutting off streams idle for `timeout`.
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            streams: Mutex::new(Streams {
                list: Vec::new(),
                prune_at: MIN_PRUNE,
            }),
        }
    }

    /// How long until the next sweep: a quarter timeout while streams are registered.
    pub(super) fn period(&self) -> Duration {
        self.timeout / u32::from(QUIET_SWEEPS)
    }

    /// Registers a new request's stream.
    pub(super) fn register(&self) -> Arc<Stream> {
        let stream = Arc::new(Stream {
            armed: AtomicBool::new(false),
            moved: AtomicBool::new(false),
            held: Mutex::new(None),
        });
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        if streams.list.len() >= streams.prune_at {
            streams.list.retain(|entry| entry.stream.strong_count() > 0);
            streams.prune_at = (2 * streams.list.len()).max(MIN_PRUNE);
        }
        streams.list.push(Entry {
            stream: Arc::downgrade(&stream),
            quiet: 0,
        });
        stream
    }

    /// Cuts off every armed stream that made no progress over [`QUIET_SWEEPS`] sweeps and
    /// forgets finished ones; call it every [`Watchdog::period`].
    pub(super) fn sweep(&self) {
        let mut stalled = Vec::new();
        {
            let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
            streams.list.retain_mut(|entry| {
                let Some(stream) = entry.stream.upgrade() else {
                    return false;
                };
                if !stream.armed.load(Ordering::Acquire) {
                    return true;
                }
                if stream.moved.swap(false, Ordering::AcqRel) {
                    entry.quiet = 0;
                    return true;
                }
                entry.quiet += 1;
                if entry.quiet < QUIET_SWEEPS {
                    return true;
                }
                stalled.push(stream);
                false
            });
        }
        for stream in stalled {
            tracing::debug!(timeout = ?self.timeout, "stream idle timeout: response cut off");
            // Dropped outside every lock: the body's drop records the request.
            drop(stream.take());
        }
    }
}

impl Stream {
    /// Notes progress.
    pub(super) fn progressed(&self) {
        self.moved.store(true, Ordering::Release);
    }

    /// Hands the response body (and its in-flight count) to the stream, arming the timer.
    pub(super) fn hold(self: Arc<Self>, body: Body, in_flight: InFlight) -> Watched {
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(Held {
            body,
            _in_flight: in_flight,
        });
        self.progressed();
        self.armed.store(true, Ordering::Release);
        Watched(self)
    }

    fn take(&self) -> Option<Held> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// A response body under the watchdog; after a cutoff it fails, and hyper resets the stream.
pub(super) struct Watched(Arc<Stream>);

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let stream = &self.0;
        let mut held = stream.held.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(current) = held.as_mut() else {
            return Poll::Ready(Some(Err("stream idle timeout".into())));
        };
        let polled = Pin::new(&mut current.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => stream.progressed(),
            // Done: release the slot now, not when hyper drops the body.
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => drop(held.take()),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let held = self.0.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.as_ref().is_some_and(|h| h.body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.0.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.as_ref()
            .map_or_else(SizeHint::default, |h| h.body.size_hint())
    }
}

/// How much of an HTTP/2 request body given up before its end is still read and thrown
/// away, and for how long, so that the client can finish its upload and read the response.
const DRAIN_BYTES: usize = 1 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// A request body that notes its progress on the stream's watchdog entry.
pub(super) struct Progress<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
{
    /// The client's request body; `None` once handed to the drain.
    body: Option<B>,
    /// Where its progress is noted.
    stream: Arc<Stream>,
    /// Dropped unfinished, the rest of the body is drained (HTTP/2).
    drain: bool,
}

impl<B> Progress<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
{
    /// `body` noting its progress on `stream`. With `drain_when_dropped` (HTTP/2), a body
    /// dropped before its end (a 413, a response that came before the upload ended) is read
    /// on and discarded, up to [`DRAIN_BYTES`] in [`DRAIN_TIME`], as nginx does: h2 would
    /// otherwise end the stream with RST_STREAM, which RFC 9113 §8.1 allows but which many
    /// clients (curl among them) report as an error instead of the response they received.
    pub(super) fn new(body: B, stream: Arc<Stream>, drain_when_dropped: bool) -> Self {
        Self {
            body: Some(body),
            stream,
            drain: drain_when_dropped,
        }
    }
}

impl<B> http_body::Body for Progress<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.stream.progressed();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(B::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(SizeHint::default, B::size_hint)
    }
}

impl<B> Drop for Progress<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
{
    fn drop(&mut self) {
        let Some(body) = self.body.take() else { return };
        if !self.drain || body.is_end_stream() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(body));
        }
    }
}

/// Reads `body` to its end and discards it, giving up (dropping it, which resets the stream
/// with NO_ERROR once the response has ended) after [`DRAIN_BYTES`] or [`DRAIN_TIME`].
async fn drain<B>(mut body: B)
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt;
    let mut read = 0;
    let reading = async {
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, Bytes::len);
            if read > DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, reading).await;
}

/// Requests in flight on one connection, and when the last one ended.
#[derive(Debug)]
pub(super) struct Activity {
    since: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `since` when the last request ended.
    last_end_ms: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            since: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
        }
    }

    /// When to look again, or `None` when the connection has been idle for `timeout`.
    pub(super) fn idle_until(&self, timeout: Duration) -> Option<Instant> {
        let now = Instant::now();
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Some(now + timeout);
        }
        let last_end = self.since + Duration::from_millis(self.last_end_ms.load(Ordering::Acquire));
        let idle_at = last_end + timeout;
        (idle_at > now).then_some(idle_at)
    }
}

/// One request in flight: counted from its arrival until its response body is done.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(super) fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let ended = self.0.since.elapsed().as_millis();
        let ended = u64::try_from(ended).unwrap_or(u64::MAX);
        self.0.last_end_ms.fetch_max(ended, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn finished_streams_do_not_pile_up() {
        let watchdog = Watchdog::new(Duration::from_secs(300));
        for _ in 0..10_000 {
            drop(watchdog.register());
        }
        let held: Vec<_> = (0..100).map(|_| watchdog.register()).collect();
        let len = watchdog.streams.lock().unwrap().list.len();
        assert!(
            len <= 2 * held.len() + MIN_PRUNE,
            "{len} entries for 100 streams"
        );
    }

    #[tokio::test]
    async fn a_stalled_body_is_cut_off_and_a_progressing_one_is_not() {
        let watchdog = Watchdog::new(Duration::from_secs(10));
        assert_eq!(watchdog.period(), Duration::from_millis(2500));
        let activity = Arc::new(Activity::new());
        let pending = http_body_util::StreamBody::new(PendingStream).boxed_unsync();
        let mut stalled = watchdog
            .register()
            .hold(pending, InFlight::start(&activity));
        let quick = watchdog.register();
        let busy = http_body_util::StreamBody::new(PendingStream).boxed_unsync();
        let busy = quick.clone().hold(busy, InFlight::start(&activity));
        // The first sweep sees the arming as progress; then four quiet sweeps cut it off.
        for sweep in 0..QUIET_SWEEPS {
            watchdog.sweep();
            quick.progressed();
            assert_eq!(
                activity.in_flight.load(Ordering::Acquire),
                2,
                "sweep {sweep}"
            );
        }
        watchdog.sweep();
        assert_eq!(
            activity.in_flight.load(Ordering::Acquire),
            1,
            "the stalled body and its in-flight count are released"
        );
        let frame = stalled.frame().await.unwrap();
        assert!(frame.is_err(), "hyper's next poll resets the stream");
        assert_eq!(
            watchdog.streams.lock().unwrap().list.len(),
            1,
            "the busy one stays"
        );
        drop(busy);
    }

    struct PendingStream;

    impl futures_core::Stream for PendingStream {
        type Item = Result<Frame<Bytes>, BoxError>;

        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Pending
        }
    }
}
