//! What is known about one client connection and the requests on it: the
//! peer, the TLS version, and the request counts that the idle deadlines,
//! parking and the body wrappers read. Below the request pipeline, so that
//! the pipeline, its body wrappers and the serving loop all share it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header::HeaderValue;

use crate::clock::monotonic_millis;

/// What is known about the client connection a request arrived on.
#[derive(Debug)]
pub struct Connection {
    /// TCP peer.
    pub peer: SocketAddr,
    /// The listener address the client connected to.
    pub local: SocketAddr,
    /// Negotiated TLS version, for the access log.
    pub tls_version: &'static str,
    /// Negotiated key exchange group ("X25519MLKEM768"), for the access log;
    /// "-" when none was (TLS 1.2 resumption).
    pub key_exchange: &'static str,
    /// The peer's IP as a header value, made once per connection.
    pub peer_value: HeaderValue,
    /// Requests on this connection, for the idle and first-request deadlines.
    pub requests: RequestTracker,
    /// A verified client certificate's `X-Forwarded-Client-Cert` value.
    pub client_cert: Option<HeaderValue>,
    /// The client-certificate settings of the site the handshake was for
    /// (by SNI); `None`: no site uses client certificates, or HTTP/3.
    pub client_site: Option<std::sync::Arc<crate::config::ClientCertificates>>,
}

/// Counts the requests of one connection. A connection is idle when no
/// request is in flight, whatever bytes trickle in (a slow client sending a
/// header a byte at a time is not "active").
#[derive(Debug, Default)]
pub struct RequestTracker {
    started: std::sync::atomic::AtomicU64,
    in_flight: std::sync::atomic::AtomicUsize,
    last_done: std::sync::atomic::AtomicU64,
    body_unread: std::sync::atomic::AtomicBool,
    /// When the first bytes of the next request head arrived (0: none yet)...
    head_since: std::sync::atomic::AtomicU64,
    /// ... and how many requests had started then: once one more has, those
    /// bytes were its head, not the next one's.
    head_for: std::sync::atomic::AtomicU64,
}

impl RequestTracker {
    /// Requests started so far.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Requests whose response has not ended yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// When the last response ended ([`monotonic_millis`]).
    pub fn last_done(&self) -> u64 {
        self.last_done.load(Ordering::Relaxed)
    }

    /// Whether the latest request came with a body that was not read to its
    /// end (answered before it was: a 413, a refusal, an app that answered
    /// early). HTTP/1.1 then cannot reuse the connection, and closing it
    /// with the body's bytes unread would reset it under the answer.
    pub fn body_left_unread(&self) -> bool {
        self.body_unread.load(Ordering::Relaxed)
    }

    pub(crate) fn set_body_unread(&self, unread: bool) {
        self.body_unread.store(unread, Ordering::Relaxed);
    }

    /// Bytes came in from the client. The first since the last response
    /// ended start the next request head, which `limits.header_read_timeout`
    /// bounds from then on.
    ///
    /// Counted by requests, not by time: a head and its response's end can
    /// fall in the same millisecond. Bytes that come while a request is in
    /// flight (its body, a pipelined head) start nothing.
    pub fn bytes_arrived(&self) {
        if self.in_flight.load(Ordering::Relaxed) != 0 {
            return;
        }
        let started = self.started.load(Ordering::Relaxed);
        if self.head_since.load(Ordering::Relaxed) == 0 || self.head_for.load(Ordering::Relaxed) != started {
            self.head_for.store(started, Ordering::Relaxed);
            self.head_since.store(monotonic_millis().max(1), Ordering::Relaxed);
        }
    }

    /// With no request in flight: since when the next request head has been
    /// coming in (its first bytes, or `answered`, the last response's real
    /// end, when they came while it was still being sent); `None` when the
    /// connection is plainly idle.
    pub fn head_since(&self, answered: u64) -> Option<u64> {
        let since = self.head_since.load(Ordering::Relaxed);
        let current = self.head_for.load(Ordering::Relaxed) == self.started.load(Ordering::Relaxed);
        (since != 0 && current).then(|| since.max(answered))
    }

    /// The latest request's body was read to its end.
    pub fn body_read(&self) {
        self.set_body_unread(false);
    }
}

/// One request in flight; dropped when its response ends or is abandoned.
pub struct RequestGuard(Arc<Connection>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let t = &self.0.requests;
        t.last_done.store(monotonic_millis(), Ordering::Relaxed);
        t.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connection {
    /// Describes a newly accepted connection.
    pub fn new(peer: SocketAddr, local: SocketAddr) -> Self {
        let ip = peer.ip().to_canonical().to_string();
        Connection {
            peer,
            local,
            tls_version: "",
            key_exchange: "-",
            peer_value: HeaderValue::from_str(&ip).expect("an IP address is a valid header value"),
            requests: RequestTracker::default(),
            client_cert: None,
            client_site: None,
        }
    }

    /// Marks a request as started; the guard marks it done.
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.requests.started.fetch_add(1, Ordering::Relaxed);
        self.requests.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of a request's own head never count as the next head's,
    /// however fast its response ends (the same millisecond included); the
    /// first bytes after it do, and only the first.
    #[test]
    fn the_next_head_is_counted_by_requests_not_by_time() {
        let conn = Arc::new(Connection::new(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ));
        let requests = &conn.requests;
        requests.bytes_arrived();
        let guard = conn.begin_request();
        // A body, or a pipelined head, while the request is in flight.
        requests.bytes_arrived();
        drop(guard);
        let answered = requests.last_done();
        assert_eq!(requests.head_since(answered), None, "its own head is not the next one");
        requests.bytes_arrived();
        let since = requests.head_since(answered).expect("the next head has begun");
        assert!(since >= answered);
        requests.bytes_arrived();
        assert_eq!(requests.head_since(answered), Some(since), "timed from its first bytes");
        let guard = conn.begin_request();
        drop(guard);
        assert_eq!(requests.head_since(requests.last_done()), None);
    }
}
