//! The HTTPS client instant-acme talks to the CA through: tokio-rustls and
//! hyper's HTTP/1.1 client, the TLS stack tlsfront already has (instead of
//! instant-acme's hyper-rustls + platform-verifier default). One connection
//! per request: an order is a handful of requests a few times a quarter.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HOST, RETRY_AFTER};
use http::Request;
use hyper_util::rt::TokioIo;
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// No request to the CA takes longer than this (connect to last byte).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTPS client verifying the CA against the system roots plus `directory_ca`.
#[derive(Clone)]
pub struct CaClient {
    tls: TlsConnector,
    /// The latest `Retry-After` the CA sent with an error, for the back-off.
    pub retry_after: Arc<Mutex<Option<SystemTime>>>,
}

impl CaClient {
    /// Trusts the system roots and, when given, every certificate in `extra_ca`.
    pub fn new(extra_ca: Option<&Path>) -> Result<CaClient, String> {
        let mut roots = RootCertStore::empty();
        roots.extend(crate::upstream::tls::system_roots().roots.iter().cloned());
        if let Some(path) = extra_ca {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    format!(
                        "acme.directory_ca {}: cannot read it as PEM certificates ({e})",
                        path.display()
                    )
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "acme.directory_ca {}: holds no usable certificate",
                    path.display()
                ));
            }
        }
        let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(CaClient {
            tls: TlsConnector::from(Arc::new(config)),
            retry_after: Arc::new(Mutex::new(None)),
        })
    }

    async fn send(&self, req: Request<BodyWrapper<Bytes>>) -> Result<BytesResponse, Error> {
        let uri = req.uri().clone();
        let other = |m: String| Error::Other(m.into());
        let host = uri
            .host()
            .ok_or_else(|| other(format!("{uri} has no host")))?
            .to_string();
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare_host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let tcp = TcpStream::connect((bare_host.as_str(), port))
            .await
            .map_err(|e| other(format!("cannot connect to {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let (mut parts, body) = req.into_parts();
        if !parts.headers.contains_key(HOST) {
            let value = uri.authority().map(|a| a.as_str().to_string()).unwrap_or(host.clone());
            if let Ok(v) = value.parse() {
                parts.headers.insert(HOST, v);
            }
        }
        // HTTP/1.1 wants origin-form on the wire.
        if let Some(pq) = uri.path_and_query() {
            if let Ok(p) = pq.as_str().parse() {
                parts.uri = p;
            }
        }
        let req = Request::from_parts(parts, body);
        let response = if https {
            let name = ServerName::try_from(bare_host.clone()).map_err(|e| other(format!("{host}: {e}")))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| other(format!("TLS with {host}:{port} failed: {e}")))?;
            exchange(TokioIo::new(tls), req).await?
        } else {
            exchange(TokioIo::new(tcp), req).await?
        };
        if !response.status().is_success() {
            if let Some(when) = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after)
            {
                if let Ok(mut slot) = self.retry_after.lock() {
                    *slot = Some(when);
                }
            }
        }
        Ok(BytesResponse::from(response))
    }
}

async fn exchange<T>(io: T, req: Request<BodyWrapper<Bytes>>) -> Result<http::Response<hyper::body::Incoming>, Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| Error::Other(Box::new(e)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(|e| Error::Other(Box::new(e)))
}

/// `Retry-After` as seconds or an HTTP date, as a point in time.
pub fn parse_retry_after(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return SystemTime::now().checked_add(Duration::from_secs(secs));
    }
    httpdate::parse_http_date(value).ok()
}

impl HttpClient for CaClient {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let client = self.clone();
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, client.send(req)).await {
                Ok(result) => result,
                Err(_) => Err(Error::Other("the CA did not answer within 30s".into())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let in_a_minute = parse_retry_after("60").unwrap();
        let left = in_a_minute.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(58) && left <= Duration::from_secs(60));
        let date = parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(httpdate::fmt_http_date(date), "Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after(""), None);
    }
}
