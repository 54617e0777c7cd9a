//! What happens before HTTP on a new connection: the PROXY protocol header,
//! plain HTTP sent to the TLS port, and the TLS handshake.

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::tls::ClientAuthSites;

use crate::policy::forwarded::TrustedProxies;
use crate::proxy_protocol::{self, Parse, Rejection};
use crate::telemetry::Telemetry;

/// Decrements the open-connections gauge however the connection ends.
pub(super) struct OpenConnection<'a>(pub(super) &'a Telemetry);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.metrics.open_connections.dec();
    }
}

/// What the TLS handshake settled, taken out of the stream in one place.
pub(super) struct Accepted {
    pub(super) tls: TlsStream<TcpStream>,
    /// ALPN chose HTTP/2.
    pub(super) speaks_h2: bool,
    /// A tls-alpn-01 validation: it ends with the handshake (RFC 8737 §3).
    pub(super) acme_validation: bool,
    pub(super) tls_version: &'static str,
    pub(super) key_exchange: &'static str,
    /// A verified client certificate's `X-Forwarded-Client-Cert` value.
    pub(super) client_cert: Option<http::HeaderValue>,
    /// The client-certificate settings of the site the handshake chose.
    pub(super) client_site: Option<Arc<crate::config::ClientCertificates>>,
}

/// The TLS handshake, within `timeout`; `None` (counted and logged) when it
/// fails. A function of its own that hands the stream over by value: a
/// future keeps a slot for every local that was ever borrowed across an
/// await, and the finished handshake plus the borrowed TLS stream held
/// ~2.4 KiB of every idle connection's task that way.
pub(super) async fn handshake(
    acceptor: &TlsAcceptor,
    sites: Option<&ClientAuthSites>,
    stream: TcpStream,
    telemetry: &Telemetry,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<Accepted> {
    let failed = |what: &dyn std::fmt::Display| {
        telemetry.metrics.tls_handshake_failures.inc();
        tracing::debug!(%peer, "TLS handshake failed: {what}");
        None
    };
    let (tls, client_site) = match sites {
        None => {
            // Count a failure before the socket closes, so what a client sees and
            // what /metrics says agree: the fallible accept hands the socket back,
            // and a timed-out accept (which holds it) is dropped after the count.
            let accepting = acceptor.accept(stream).into_fallible();
            tokio::pin!(accepting);
            match tokio::time::timeout(timeout, accepting.as_mut()).await {
                Ok(Ok(tls)) => (tls, None),
                Ok(Err((e, io))) => {
                    drop(io);
                    return failed(&e);
                }
                Err(_) => return failed(&"timed out"),
            }
        }
        Some(sites) => match tokio::time::timeout(timeout, by_site(sites, stream)).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return failed(&e),
            Err(_) => return failed(&"timed out"),
        },
    };
    telemetry.metrics.tls_handshakes.inc();
    let session = tls.get_ref().1;
    // The protocol is the one ALPN chose: no sniffing of the first bytes
    // (hyper's auto-detection reads them apart, which made the HTTP/1.1 read
    // buffer grow to 16 KiB on every connection). Without ALPN, HTTP/1.1:
    // HTTP/2 over TLS is negotiated by ALPN only (RFC 9113 section 3.3).
    let speaks_h2 = session.alpn_protocol() == Some(b"h2");
    let acme_validation = session.alpn_protocol() == Some(crate::acme::ACME_TLS_ALPN);
    let tls_version = match session.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "",
    };
    let key_exchange = session
        .negotiated_key_exchange_group()
        .map_or("-", |g| crate::tls::group_name(g.name()));
    telemetry.metrics.count_key_exchange(key_exchange);
    let client_cert = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| crate::policy::client_cert::header_value(leaf));
    Some(Accepted {
        tls,
        speaks_h2,
        acme_validation,
        tls_version,
        key_exchange,
        client_cert,
        client_site,
    })
}

/// The handshake when some site asks for client certificates: the
/// ClientHello is read first, and its SNI picks the site's configuration.
async fn by_site(
    sites: &ClientAuthSites,
    stream: TcpStream,
) -> std::io::Result<(TlsStream<TcpStream>, Option<Arc<crate::config::ClientCertificates>>)> {
    let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    let hello = start.client_hello();
    let name = hello
        .server_name()
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
    // An ACME tls-alpn-01 validation presents no client certificate.
    let acme_only = hello
        .alpn()
        .is_some_and(|mut protocols| protocols.all(|p| p == crate::acme::ACME_TLS_ALPN));
    let (settings, config) = sites.for_name(name.as_deref());
    let (settings, config) = if acme_only {
        (None, sites.for_name(None).1.clone())
    } else {
        (Some(settings.clone()), config.clone())
    };
    let tls = start.into_stream(config).await?;
    Ok((tls, settings))
}

/// `listen.proxy_protocol`: who may send the PROXY header, and how long
/// they have; from the generation, so a reload applies to new connections.
pub(super) struct ProxyHeaderGate {
    pub(super) trusted: TrustedProxies,
    pub(super) timeout: Duration,
}

impl ProxyHeaderGate {
    /// Takes the header off a new connection: the client address to use
    /// from now on (the header's, or `peer` for LOCAL/UNKNOWN), or `None`
    /// when the connection is to be closed without a response (counted).
    pub(super) async fn admit(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        telemetry: &Telemetry,
    ) -> Option<SocketAddr> {
        let taken = if self.trusted.contains(peer.ip()) {
            match tokio::time::timeout(self.timeout, read_proxy_header(stream)).await {
                Ok(taken) => taken,
                Err(_) => Err(Rejection::Timeout),
            }
        } else {
            Err(Rejection::UntrustedPeer)
        };
        match taken {
            Ok(header) => Some(header.source().unwrap_or(peer)),
            Err(reason) => {
                telemetry.metrics.count_proxy_protocol_rejected(reason);
                tracing::debug!(%peer, "closing connection: PROXY protocol header {}", reason.label());
                None
            }
        }
    }
}

/// Reads exactly the PROXY header and not one byte more, so the TLS
/// ClientHello (or plain HTTP) behind it stays in the socket. Peeks, then
/// consumes only bytes the parser has placed inside the header: when it
/// needs more, every byte seen so far is header, and when it is complete,
/// `consumed` says where the header ends.
pub(super) async fn read_proxy_header(stream: &mut TcpStream) -> Result<proxy_protocol::Header, Rejection> {
    let mut buf = vec![0u8; proxy_protocol::V1_MAX_LEN];
    let mut have = 0;
    loop {
        let peeked = match stream.peek(&mut buf[have..]).await {
            Ok(0) | Err(_) => return Err(Rejection::Closed),
            Ok(n) => n,
        };
        match proxy_protocol::parse(&buf[..have + peeked])? {
            Parse::Complete { header, consumed } => {
                stream
                    .read_exact(&mut buf[have..consumed])
                    .await
                    .map_err(|_| Rejection::Closed)?;
                return Ok(header);
            }
            Parse::Incomplete { at_least } => {
                stream
                    .read_exact(&mut buf[have..have + peeked])
                    .await
                    .map_err(|_| Rejection::Closed)?;
                have += peeked;
                // A v2 header longer than the first window (TLVs): make room.
                if at_least > buf.len() {
                    buf.resize(at_least.min(proxy_protocol::V2_MAX_LEN), 0);
                }
            }
        }
    }
}

/// Plain HTTP on the TLS port: say so, in plain HTTP, then close.
pub(super) async fn answer_plain_http_on_tls_port(mut stream: TcpStream, local: SocketAddr) {
    let mut buf = vec![0u8; 8192];
    let n = match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
        Ok(Ok(n)) => n,
        _ => 0,
    };
    let head = String::from_utf8_lossy(&buf[..n]);
    let host = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("host")
                .then(|| value.trim().to_string())
        })
        .filter(|h| h.parse::<http::uri::Authority>().is_ok())
        .unwrap_or_else(|| format!("localhost:{}", local.port()));
    let body = format!("400 Bad Request: this port speaks HTTPS, not plain HTTP.\nUse https://{host}/ instead.\n");
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(response.as_bytes())).await;
    let _ = stream.shutdown().await;
}
