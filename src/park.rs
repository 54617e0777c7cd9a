//! Idle HTTP/1.1 connections give their buffers back.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for as long as
//! its connection lives, idle or not, and has no setting to release them. A
//! kept-alive connection that has had nothing to do for [`PARK_AFTER`] is
//! therefore *parked*: when nothing is waiting to be read, its stream tells
//! hyper "end of stream", hyper ends the connection cleanly between two
//! messages, and the TLS stream comes back (instead of being shut down) to
//! wait for the client's next bytes with no HTTP state at all. Those bytes
//! start a new hyper connection on the same stream. nginx does the same with
//! its keep-alive connections (it frees their buffers while they wait).
//!
//! Only at a message boundary: the made-up end of stream must never cut a
//! request hyper holds in part (a head split over TCP segments, a lost
//! segment's retransmission, a pipelined request, the rest of a body), nor
//! a response hyper or rustls has not sent yet. Parking is asked for only
//! with no request in flight and the last request's body read to its end,
//! and done only while the last bytes hyper received end a request head
//! with its blank line (`\r\n\r\n`), nothing new has arrived, and the last
//! thing hyper did with the stream's write side was a flush that completed
//! (a response queued in hyper's or rustls' buffers, waiting for a slow
//! reader, is not "done" even when its body has been handed over). A
//! connection whose last request had a body not ending that way keeps its
//! buffers until its next bodiless request (the safe side).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::clock::monotonic_millis;
use crate::connection::RequestTracker;

/// How long a kept-alive HTTP/1.1 connection stays idle before it is parked.
/// Busy connections never reach it, so their buffers are reused.
pub const PARK_AFTER: Duration = Duration::from_millis(500);

/// Shared between the stream hyper reads and the task serving the connection.
#[derive(Default)]
pub struct Parking {
    /// The connection may be parked (HTTP/1.1; an HTTP/2 connection only
    /// uses the write-side bookkeeping).
    parks: bool,
    /// Set by the serving task: park at the next read that would wait.
    requested: AtomicBool,
    /// The last bytes hyper received end with a blank line.
    between_messages: AtomicBool,
    /// The stream, handed back when hyper let go of it.
    returned: Mutex<Option<Returned>>,
    /// Bytes were written that no completed flush has sent yet: a response
    /// is still on its way even when its body has been handed over whole.
    unflushed: AtomicBool,
    /// When a flush that had to wait for the client last completed
    /// ([`monotonic_millis`]): the true end of a response that left slowly,
    /// for the keep-alive deadlines (the others end with their body).
    flushed_at: AtomicU64,
    /// Since when the client has taken none of the bytes waiting for it
    /// ([`monotonic_millis`]; 0: not blocked), for `limits.send_timeout`.
    blocked_since: AtomicU64,
}

/// A stream hyper let go of.
pub struct Returned {
    pub stream: TlsStream<TcpStream>,
    /// Ended by parking (else by the client, an error, or a shutdown).
    pub parked: bool,
}

impl Parking {
    /// For a connection that speaks HTTP/1.1 (`parks`) or HTTP/2.
    pub fn new(parks: bool) -> Self {
        Parking {
            parks,
            ..Parking::default()
        }
    }

    /// Whether the connection may be parked.
    pub fn parks(&self) -> bool {
        self.parks
    }

    /// Ask the stream to end hyper's connection at its next idle read.
    pub fn request(&self) {
        self.requested.store(true, Ordering::Relaxed);
    }

    /// Whether parking was asked for (and has not happened yet).
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    /// Whether the last bytes hyper received end with a blank line (the end
    /// of a request head, or of a chunked body): no partial message can be
    /// left in hyper's buffer when no request is in flight.
    pub fn between_messages(&self) -> bool {
        self.between_messages.load(Ordering::Relaxed)
    }

    /// Whether written bytes still wait for a flush to complete.
    pub fn unflushed(&self) -> bool {
        self.unflushed.load(Ordering::Relaxed)
    }

    /// When the last response really ended ([`monotonic_millis`]): its body
    /// was handed over, or later, its last bytes left after a flush that
    /// had to wait for the client. Keep-alive deadlines count from here.
    pub fn answered(&self, requests: &RequestTracker) -> u64 {
        requests.last_done().max(self.flushed_at.load(Ordering::Relaxed))
    }

    /// Since when writing has been blocked by a client that does not read
    /// (0: it is not).
    pub fn blocked_since(&self) -> u64 {
        self.blocked_since.load(Ordering::Relaxed)
    }

    /// The stream hyper's connection let go of (none after an upgrade,
    /// which keeps it).
    pub fn take(&self) -> Option<Returned> {
        self.requested.store(false, Ordering::Relaxed);
        self.returned.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The TLS stream as hyper sees it on an HTTP/1.1 connection.
pub struct ParkingStream {
    inner: Option<TlsStream<TcpStream>>,
    parking: Arc<Parking>,
    /// An end of stream was made up to park.
    ended_to_park: bool,
    /// Everything written so far has been flushed to the socket: the last
    /// write-side call was a flush that completed.
    flushed: bool,
    /// The last write-side call found the socket full.
    blocked: bool,
    /// A write-side call found the socket full since the last flush: that
    /// flush's completion is then timed (otherwise it came in the same poll
    /// as the response's end, whose time is already kept).
    waited_since_flush: bool,
    /// The last four bytes hyper received.
    tail: u32,
}

const BLANK_LINE: u32 = u32::from_be_bytes(*b"\r\n\r\n");

impl ParkingStream {
    pub fn new(inner: TlsStream<TcpStream>, parking: Arc<Parking>) -> Self {
        parking.between_messages.store(false, Ordering::Relaxed);
        ParkingStream {
            inner: Some(inner),
            parking,
            ended_to_park: false,
            flushed: true,
            blocked: false,
            waited_since_flush: false,
            tail: 0,
        }
    }

    fn received(&mut self, bytes: &[u8]) {
        for &b in &bytes[bytes.len().saturating_sub(4)..] {
            self.tail = (self.tail << 8) | u32::from(b);
        }
        // New bytes: whatever was asked before them no longer holds.
        self.parking.requested.store(false, Ordering::Relaxed);
        self.parking
            .between_messages
            .store(self.tail == BLANK_LINE, Ordering::Relaxed);
    }

    /// Bookkeeping for a write-side call; shared state is touched only on
    /// changes (about once per response), so the hot path stays local.
    fn wrote(&mut self, progress: bool, pending: bool) {
        if self.flushed {
            self.flushed = false;
            self.parking.unflushed.store(true, Ordering::Relaxed);
        }
        self.track_blocking(progress, pending);
    }

    fn track_blocking(&mut self, progress: bool, pending: bool) {
        if pending && !self.blocked {
            self.blocked = true;
            self.waited_since_flush = true;
            self.parking
                .blocked_since
                .store(monotonic_millis().max(1), Ordering::Relaxed);
        } else if progress && self.blocked {
            self.blocked = false;
            self.parking.blocked_since.store(0, Ordering::Relaxed);
        }
    }
}

impl Drop for ParkingStream {
    /// Hands the stream back to the serving task ([`Parking::take`]).
    fn drop(&mut self) {
        if let Some(stream) = self.inner.take() {
            *self.parking.returned.lock().unwrap_or_else(|p| p.into_inner()) = Some(Returned {
                stream,
                parked: self.ended_to_park,
            });
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection parked")
}

impl AsyncRead for ParkingStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ended_to_park {
            return Poll::Ready(Ok(()));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        let before = buf.filled().len();
        match Pin::new(inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.received(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            // Nothing waiting, in rustls or in the socket: a read that
            // returns no bytes is an end of stream to hyper.
            Poll::Pending if this.flushed && this.parking.requested() && this.parking.between_messages() => {
                this.ended_to_park = true;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for ParkingStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        let written = Pin::new(inner).poll_write(cx, buf);
        this.wrote(matches!(written, Poll::Ready(Ok(n)) if n > 0), written.is_pending());
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        let written = Pin::new(inner).poll_write_vectored(cx, bufs);
        this.wrote(matches!(written, Poll::Ready(Ok(n)) if n > 0), written.is_pending());
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.inner.as_mut() {
            Some(inner) => {
                let flushing = Pin::new(inner).poll_flush(cx);
                // Flushing the TLS stream also sends what rustls holds.
                let done = matches!(flushing, Poll::Ready(Ok(())));
                if done && !this.flushed {
                    this.flushed = true;
                    this.parking.unflushed.store(false, Ordering::Relaxed);
                    if std::mem::take(&mut this.waited_since_flush) {
                        this.parking.flushed_at.store(monotonic_millis(), Ordering::Relaxed);
                    }
                } else if flushing.is_pending() && this.flushed {
                    // rustls holds bytes of its own (a post-handshake message).
                    this.flushed = false;
                    this.parking.unflushed.store(true, Ordering::Relaxed);
                }
                this.track_blocking(done, flushing.is_pending());
                flushing
            }
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // hyper shuts its stream down when its connection ends; a parked
        // one stays open for the client's next request.
        if this.ended_to_park {
            return Poll::Ready(Ok(()));
        }
        match this.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// Wakes [`give_back_freed_memory`]: a connection parked.
fn parked_notice() -> &'static tokio::sync::Notify {
    static NOTICE: std::sync::OnceLock<tokio::sync::Notify> = std::sync::OnceLock::new();
    NOTICE.get_or_init(tokio::sync::Notify::new)
}

/// A connection parked: its buffers are back in the allocator.
pub fn freed() {
    // One stored permit however many park before the task runs.
    parked_notice().notify_one();
}

/// After connections parked, returns the allocator's free pages to the
/// system, at most every half second. glibc keeps freed memory inside its
/// heaps (only the top of a heap is trimmed on its own), so without this
/// the buffers parked connections gave back would stay resident. Nothing
/// runs while nothing parks.
pub async fn give_back_freed_memory() {
    loop {
        parked_notice().notified().await;
        // Let a burst of parkings gather into one trim.
        tokio::time::sleep(Duration::from_millis(500)).await;
        trim();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes a padding size and only releases memory the
    // allocator holds free; it touches no memory the program owns.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
