//! Body wrappers on the request path: a size limit on what clients send,
//! and a counter on what they receive that records the request when done.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::proxy::{Connection, RequestGuard};
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
pub struct LimitedBody {
    inner: Incoming,
    remaining: u64,
    outcome: BodyOutcome,
    telemetry: Arc<Telemetry>,
    /// The connection the body comes in on, told when it was read to its
    /// end (`None` for a request without a body).
    reader: Option<Arc<Connection>>,
}

impl LimitedBody {
    /// `limit` 0 = unlimited. `outcome` records why the body failed, if it did.
    pub fn new(
        inner: Incoming,
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

impl Body for LimitedBody {
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
    sent: u64,
    in_flight: Option<InFlight>,
    telemetry: Arc<Telemetry>,
    /// Keeps the request counted as in flight on its connection until the body is gone.
    _request: RequestGuard,
}

impl ObservedBody {
    /// Wraps a response body.
    pub fn new(inner: ProxyBody, in_flight: InFlight, telemetry: Arc<Telemetry>, request: RequestGuard) -> Self {
        ObservedBody {
            inner,
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
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => self.finish(),
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

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.finish();
    }
}
