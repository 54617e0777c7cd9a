//! The QUIC side of a generation's TLS configuration: the same
//! certificates and resolver, ALPN `h3`, TLS 1.3, the limits as for TCP.
//! Apart from [`super::http3`], which serves it, so that a generation can
//! hold its setup without the generation and the serving loop importing
//! each other.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use quinn::crypto::rustls::QuicServerConfig;

use crate::config::Config;
use crate::tls::GroupObserver;

/// The ALPN protocol of HTTP/3 (RFC 9114).
const ALPN_H3: &[u8] = b"h3";
/// Unidirectional streams a client may open: HTTP/3 needs three (control,
/// QPACK encoder and decoder); a few more for grease and extensions.
const MAX_UNI_STREAMS: u32 = 16;
/// The part of a generation's QUIC setup that every connection shares; each
/// connection gets a copy whose certificate resolver notes the group.
pub struct QuicSetup {
    tls: Arc<rustls::ServerConfig>,
    quic: quinn::ServerConfig,
    key_exchange: Vec<crate::config::KeyExchange>,
}

impl QuicSetup {
    /// From a generation's TLS configuration: the same certificates and
    /// resolver, ALPN `h3`, TLS 1.3 (QUIC has no other), 0-RTT only when
    /// `tls.early_data` is on; the limits as for TCP.
    pub fn new(tls: &Arc<rustls::ServerConfig>, config: &Config) -> Result<Self, String> {
        let mut tls = rustls::ServerConfig::clone(tls);
        tls.alpn_protocols = vec![ALPN_H3.to_vec()];
        // RFC 9001 §4.6.1: 0xffffffff or nothing.
        tls.max_early_data_size = if config.tls.early_data { u32::MAX } else { 0 };
        if config.tls.early_data {
            // rustls accepts 0-RTT only on stateful resumption (its session
            // cache, which also refuses a replayed ticket), not on tickets.
            tls.ticketer = Arc::new(StatefulResumption);
        }
        let tls = Arc::new(tls);
        let crypto = QuicServerConfig::try_from(tls.clone()).map_err(|e| format!("QUIC TLS: {e}"))?;
        let limits = &config.limits;
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(quinn::VarInt::from_u32(limits.max_concurrent_streams))
            .max_concurrent_uni_streams(quinn::VarInt::from_u32(MAX_UNI_STREAMS))
            .max_idle_timeout(quinn::IdleTimeout::try_from(limits.idle_timeout).ok());
        let mut quic = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        quic.transport_config(Arc::new(transport));
        Ok(QuicSetup {
            tls,
            quic,
            key_exchange: config.tls.key_exchange.clone(),
        })
    }

    /// One connection's configuration, and where its key exchange group
    /// will be written.
    pub(super) fn for_connection(&self) -> Result<(Arc<quinn::ServerConfig>, Arc<OnceLock<&'static str>>), String> {
        let chosen = Arc::new(OnceLock::new());
        let mut tls = rustls::ServerConfig::clone(&self.tls);
        tls.cert_resolver = Arc::new(GroupObserver::new(
            tls.cert_resolver.clone(),
            &self.key_exchange,
            chosen.clone(),
        ));
        let crypto = QuicServerConfig::try_from(Arc::new(tls)).map_err(|e| format!("QUIC TLS: {e}"))?;
        let mut quic = self.quic.clone();
        quic.crypto = Arc::new(crypto);
        Ok((Arc::new(quic), chosen))
    }
}

/// No tickets: resumption through rustls' session cache instead.
#[derive(Debug)]
struct StatefulResumption;

impl rustls::server::ProducesTickets for StatefulResumption {
    fn enabled(&self) -> bool {
        false
    }

    fn lifetime(&self) -> u32 {
        0
    }

    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }

    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// The UDP socket for HTTP/3 at `addr` (the HTTPS listener's address).
pub(super) fn bind(addr: SocketAddr, first: &QuicSetup) -> Result<quinn::Endpoint, String> {
    quinn::Endpoint::server(first.quic.clone(), addr).map_err(|e| {
        format!("cannot listen on udp {addr} (listen.https, for HTTP/3; listen.http3 = false turns it off): {e}")
    })
}
