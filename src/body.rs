//! Body wrappers on the request path: a size limit on what clients send,
//! and a counter on what they receive that records the request when done.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::connection::{Connection, RequestGuard};
use crate::telemetry::{InFlight, Telemetry};
use crate::upstream::{BoxError, ProxyBody};

/// The client sent more than `limits.max_request_body_bytes`.
#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body larger than limits.max_request_body_bytes")
    }
}

impl std::error::Error for BodyTooLarge {}

/// How a request body ended, as seen by [`LimitedBody`].
#[derive(Debug, Default, Clone)]
pub struct BodyOutcome(Arc<AtomicU8>);

impl BodyOutcome {
    const TOO_LARGE: u8 = 1;
    const CLIENT_ERROR: u8 = 2;

    /// More than the limit came in.
    pub fn too_large(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::TOO_LARGE
    }

    /// The client's body was malformed (bad chunking) or cut off.
    pub fn client_error(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::CLIENT_ERROR
    }
}

/// A request body that fails once more than `remaining` bytes came in, and
/// counts what it passes.
/// Generic over the client's body: hyper's [`Incoming`] for HTTP/1.1 and
/// HTTP/2, an HTTP/3 request stream for HTTP/3.
pub struct LimitedBody<B = Incoming> {
    inner: B,
    remaining: u64,
    outcome: BodyOutcome,
    telemetry: Arc<Telemetry>,
    /// The connection the body comes in on, told when it was read to its
    /// end (`None` for a request without a body).
    reader: Option<Arc<Connection>>,
}

impl<B> LimitedBody<B> {
    /// `limit` 0 = unlimited. `outcome` records why the body failed, if it did.
    pub fn new(
        inner: B,
        limit: u64,
        outcome: BodyOutcome,
        telemetry: Arc<Telemetry>,
        reader: Option<Arc<Connection>>,
    ) -> Self {
        LimitedBody {
            inner,
            remaining: if limit == 0 { u64::MAX } else { limit },
            outcome,
            telemetry,
            reader,
        }
    }

    fn read_to_the_end(&mut self) {
        if let Some(conn) = self.reader.take() {
            conn.requests.body_read();
        }
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => {
                self.outcome.0.store(BodyOutcome::CLIENT_ERROR, Ordering::Relaxed);
                return Poll::Ready(Some(Err(e.into())));
            }
            Poll::Ready(None) => {
                self.read_to_the_end();
                return Poll::Ready(None);
            }
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let n = data.len() as u64;
            if n > self.remaining {
                self.outcome.0.store(BodyOutcome::TOO_LARGE, Ordering::Relaxed);
                return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
            }
            self.remaining -= n;
            self.telemetry.metrics.bytes_in.inc_by(n);
        }
        if self.inner.is_end_stream() {
            self.read_to_the_end();
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that counts the bytes it passes and records the request
/// (metrics, access log) when it ends, fails or is dropped by the client.
pub struct ObservedBody {
    inner: ProxyBody,
    /// `read_timeout` of the route: the longest the app may stay silent in
    /// the middle of the body (none for tlsfront's own answers).
    read_timeout: Option<Duration>,
    /// Armed the first time the app makes the body wait (boxed: most bodies
    /// never wait, and then cost no timer), re-armed after each frame.
    silence: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame came since the timer was armed.
    progressed: bool,
    sent: u64,
    in_flight: Option<InFlight>,
    telemetry: Arc<Telemetry>,
    /// Keeps the request counted as in flight on its connection until the body is gone.
    _request: RequestGuard,
}

impl ObservedBody {
    /// Wraps a response body.
    pub fn new(
        inner: ProxyBody,
        in_flight: InFlight,
        telemetry: Arc<Telemetry>,
        request: RequestGuard,
        read_timeout: Option<Duration>,
    ) -> Self {
        ObservedBody {
            inner,
            read_timeout,
            silence: None,
            progressed: false,
            sent: 0,
            in_flight: Some(in_flight),
            telemetry,
            _request: request,
        }
    }

    fn finish(&mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.finish(&self.telemetry, self.sent);
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
                self.progressed = true;
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => self.finish(),
            // Timed from the body's first frame on: most responses are a
            // head and one frame, whose first wait would otherwise cost
            // every request a timer (+2.3 % of an HTTP/1.1 request's
            // instructions, measured). An app silent between its head and
            // the first byte of its body is therefore not covered.
            Poll::Pending if self.sent > 0 || self.silence.is_some() => {
                if let Some(limit) = self.read_timeout {
                    if self.app_silent_for(limit, cx) {
                        self.finish();
                        return Poll::Ready(Some(Err(format!(
                            "the app sent nothing for {} in the middle of the response body (read_timeout)",
                            humantime::format_duration(limit)
                        )
                        .into())));
                    }
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl ObservedBody {
    /// Whether the app has now been silent for `limit` while the body
    /// waits (arming or re-arming the timer, which wakes this task).
    fn app_silent_for(&mut self, limit: Duration, cx: &mut Context<'_>) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let progressed = std::mem::take(&mut self.progressed);
        let silence = match &mut self.silence {
            Some(silence) => {
                if progressed {
                    silence.as_mut().reset(deadline);
                }
                silence
            }
            None => self.silence.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        silence.as_mut().poll(cx).is_ready()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.finish();
    }
}
