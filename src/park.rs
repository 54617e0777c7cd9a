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
use crate::connection::Connection;

/// How long a kept-alive HTTP/1.1 connection stays idle before it is parked.
/// Busy connections never reach it, so their buffers are reused.
pub const PARK_AFTER: Duration = Duration::from_millis(500);

/// Shared between the stream hyper reads and the task serving the connection.
pub struct Parking {
    /// The connection may be parked (HTTP/1.1; an HTTP/2 connection only
    /// uses the write-side bookkeeping).
    parks: bool,
    /// The connection's requests: bytes that arrive start a request head.
    conn: Arc<Connection>,
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
    pub fn new(parks: bool, conn: Arc<Connection>) -> Self {
        Parking {
            parks,
            conn,
            requested: AtomicBool::default(),
            between_messages: AtomicBool::default(),
            returned: Mutex::default(),
            unflushed: AtomicBool::default(),
            flushed_at: AtomicU64::default(),
            blocked_since: AtomicU64::default(),
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
    pub fn answered(&self) -> u64 {
        self.conn
            .requests
            .last_done()
            .max(self.flushed_at.load(Ordering::Relaxed))
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
    /// What hyper's writes and flushes left behind.
    writes: WriteState,
    /// The last four bytes hyper received.
    tail: u32,
}

const BLANK_LINE: u32 = u32::from_be_bytes(*b"\r\n\r\n");

/// The last four bytes received, after `bytes` came in behind `tail`: a
/// blank line split over reads (`"\r\n\r"` then `"\n"`) is still seen.
fn shift_tail(tail: u32, bytes: &[u8]) -> u32 {
    bytes[bytes.len().saturating_sub(4)..]
        .iter()
        .fold(tail, |t, &b| (t << 8) | u32::from(b))
}

/// What hyper's writes and flushes did, as far as parking and
/// `limits.send_timeout` care. Pure (no clock, no shared state), so that
/// its cases are tested as a table; [`ParkingStream`] applies the changes
/// it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WriteState {
    /// Everything written so far has been flushed to the socket: the last
    /// write-side call was a flush that completed.
    flushed: bool,
    /// The last write-side call found the socket full.
    blocked: bool,
    /// A write-side call found the socket full since the last flush: that
    /// flush's completion is then timed (otherwise it came in the same poll
    /// as the response's end, whose time is already kept).
    waited_since_flush: bool,
}

/// Changes the serving task must learn of; shared state is touched only on
/// these (about once per response), so the hot path stays local.
#[derive(Debug, Default, PartialEq, Eq)]
struct WriteChanges {
    /// Bytes now wait for a flush (true), or a flush sent them all (false).
    unflushed: Option<bool>,
    /// The client stopped taking bytes (true), or took some again (false).
    blocked: Option<bool>,
    /// A flush completed after the socket had been full: the response's
    /// true end, to be timed.
    flushed_after_wait: bool,
}

impl WriteState {
    const NEW: WriteState = WriteState {
        flushed: true,
        blocked: false,
        waited_since_flush: false,
    };

    /// A write or vectored write: `progress` when it took bytes, `pending`
    /// when the socket was full.
    fn wrote(&mut self, progress: bool, pending: bool) -> WriteChanges {
        let mut changes = WriteChanges::default();
        if self.flushed {
            self.flushed = false;
            changes.unflushed = Some(true);
        }
        self.track_blocking(progress, pending, &mut changes);
        changes
    }

    /// A flush: `done` when it completed, `pending` when it must wait.
    fn flush(&mut self, done: bool, pending: bool) -> WriteChanges {
        let mut changes = WriteChanges::default();
        if done && !self.flushed {
            self.flushed = true;
            changes.unflushed = Some(false);
            changes.flushed_after_wait = std::mem::take(&mut self.waited_since_flush);
        } else if pending && self.flushed {
            // rustls holds bytes of its own (a post-handshake message).
            self.flushed = false;
            changes.unflushed = Some(true);
        }
        self.track_blocking(done, pending, &mut changes);
        changes
    }

    fn track_blocking(&mut self, progress: bool, pending: bool, changes: &mut WriteChanges) {
        if pending && !self.blocked {
            self.blocked = true;
            self.waited_since_flush = true;
            changes.blocked = Some(true);
        } else if progress && self.blocked {
            self.blocked = false;
            changes.blocked = Some(false);
        }
    }
}

impl ParkingStream {
    pub fn new(inner: TlsStream<TcpStream>, parking: Arc<Parking>) -> Self {
        parking.between_messages.store(false, Ordering::Relaxed);
        ParkingStream {
            inner: Some(inner),
            parking,
            ended_to_park: false,
            writes: WriteState::NEW,
            tail: 0,
        }
    }

    fn received(&mut self, bytes: &[u8]) {
        self.tail = shift_tail(self.tail, bytes);
        // Heads are timed this way on HTTP/1.1 only (HTTP/2 streams have no
        // idle head to wait for).
        if self.parking.parks {
            self.parking.conn.requests.bytes_arrived();
        }
        // New bytes: whatever was asked before them no longer holds.
        self.parking.requested.store(false, Ordering::Relaxed);
        self.parking
            .between_messages
            .store(self.tail == BLANK_LINE, Ordering::Relaxed);
    }

    /// Tells the serving task what the write side's last call changed.
    fn apply(&self, changes: WriteChanges) {
        if let Some(unflushed) = changes.unflushed {
            self.parking.unflushed.store(unflushed, Ordering::Relaxed);
        }
        match changes.blocked {
            Some(true) => self
                .parking
                .blocked_since
                .store(monotonic_millis().max(1), Ordering::Relaxed),
            Some(false) => self.parking.blocked_since.store(0, Ordering::Relaxed),
            None => {}
        }
        if changes.flushed_after_wait {
            self.parking.flushed_at.store(monotonic_millis(), Ordering::Relaxed);
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
            Poll::Pending if this.writes.flushed && this.parking.requested() && this.parking.between_messages() => {
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
        let changes = this
            .writes
            .wrote(matches!(written, Poll::Ready(Ok(n)) if n > 0), written.is_pending());
        this.apply(changes);
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
        let changes = this
            .writes
            .wrote(matches!(written, Poll::Ready(Ok(n)) if n > 0), written.is_pending());
        this.apply(changes);
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
                let changes = this.writes.flush(done, flushing.is_pending());
                this.apply(changes);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The blank line that ends a head is seen however the reads split it,
    /// and anything after it (a pipelined request, a body) undoes it.
    #[test]
    fn blank_line_across_split_reads() {
        let cases: &[(&[&[u8]], bool)] = &[
            (&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"], true),
            (&[b"GET / HTTP/1.1\r\nHost: a\r\n\r", b"\n"], true),
            (&[b"GET / HTTP/1.1\r\nHost: a\r\n", b"\r\n"], true),
            (&[b"GET / HTTP/1.1\r\nHost: a\r", b"\n", b"\r", b"\n"], true),
            (&[b"x", b"\r\n\r\n"], true),
            (&[b"\r\n\r\n"], true),
            (&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\nG"], false),
            (&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"G"], false),
            (&[b"GET / HTTP/1.1\r\nHo"], false),
            (&[b"GET / HTTP/1.1\r\n\r", b"\nbody"], false),
            (&[b"\r\n\r"], false),
            (&[b"\n\r\n\r"], false),
            (&[b"\r\n\r\n", b""], true),
            (&[], false),
        ];
        for (reads, ends) in cases {
            let tail = reads.iter().fold(0, |t, r| shift_tail(t, r));
            assert_eq!(tail == BLANK_LINE, *ends, "{reads:?}");
        }
    }

    /// Each write-side call, from each state: what it leaves and reports.
    #[test]
    fn write_bookkeeping() {
        let state = |flushed, blocked, waited_since_flush| WriteState {
            flushed,
            blocked,
            waited_since_flush,
        };
        let changes = |unflushed, blocked, flushed_after_wait| WriteChanges {
            unflushed,
            blocked,
            flushed_after_wait,
        };
        // (from, call, to, reported); call: ("write"|"flush", progress/done, pending)
        let cases = [
            // A response written and flushed at once: one change each way.
            (
                WriteState::NEW,
                ("write", true, false),
                state(false, false, false),
                changes(Some(true), None, false),
            ),
            (
                state(false, false, false),
                ("write", true, false),
                state(false, false, false),
                changes(None, None, false),
            ),
            (
                state(false, false, false),
                ("flush", true, false),
                state(true, false, false),
                changes(Some(false), None, false),
            ),
            // The client stops reading: blocked, and the flush that finally
            // completes is the response's timed end.
            (
                state(false, false, false),
                ("write", false, true),
                state(false, true, true),
                changes(None, Some(true), false),
            ),
            (
                state(false, true, true),
                ("write", false, true),
                state(false, true, true),
                changes(None, None, false),
            ),
            (
                state(false, true, true),
                ("write", true, false),
                state(false, false, true),
                changes(None, Some(false), false),
            ),
            (
                state(false, false, true),
                ("flush", true, false),
                state(true, false, false),
                changes(Some(false), None, true),
            ),
            (
                state(false, true, true),
                ("flush", false, true),
                state(false, true, true),
                changes(None, None, false),
            ),
            (
                state(false, true, true),
                ("flush", true, false),
                state(true, false, false),
                changes(Some(false), Some(false), true),
            ),
            // A flush with nothing written that must wait: rustls holds bytes.
            (
                WriteState::NEW,
                ("flush", false, true),
                state(false, true, true),
                changes(Some(true), Some(true), false),
            ),
            // An idle flush: nothing to report.
            (
                WriteState::NEW,
                ("flush", true, false),
                WriteState::NEW,
                changes(None, None, false),
            ),
            // A write that fails (neither progress nor pending) still leaves bytes unflushed.
            (
                WriteState::NEW,
                ("write", false, false),
                state(false, false, false),
                changes(Some(true), None, false),
            ),
        ];
        for (from, (call, a, b), to, reported) in cases {
            let mut s = from;
            let got = match call {
                "write" => s.wrote(a, b),
                _ => s.flush(a, b),
            };
            assert_eq!((s, got), (to, reported), "{call}({a}, {b}) from {from:?}");
        }
    }
}
