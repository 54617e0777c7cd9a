//! `[tls]` and `[[tls.certificate]]`: which certificates are served, for
//! which names, and the protocol versions.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::error::line_col;
use super::values::{optional_path, parse_name};

/// Minimum TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

/// A key exchange group, by its IANA name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum KeyExchange {
    /// Hybrid post-quantum: X25519 with ML-KEM-768 (TLS 1.3 only).
    X25519MLKEM768,
    /// Classical elliptic-curve Diffie-Hellman on Curve25519.
    X25519,
    /// NIST P-256.
    #[serde(rename = "secp256r1")]
    Secp256r1,
    /// NIST P-384.
    #[serde(rename = "secp384r1")]
    Secp384r1,
}

impl KeyExchange {
    /// The default preference: hybrid post-quantum first, then classical.
    pub const DEFAULT: [KeyExchange; 4] = [
        KeyExchange::X25519MLKEM768,
        KeyExchange::X25519,
        KeyExchange::Secp256r1,
        KeyExchange::Secp384r1,
    ];

    /// The name as written in the configuration (and the IANA registry).
    pub fn name(self) -> &'static str {
        match self {
            KeyExchange::X25519MLKEM768 => "X25519MLKEM768",
            KeyExchange::X25519 => "X25519",
            KeyExchange::Secp256r1 => "secp256r1",
            KeyExchange::Secp384r1 => "secp384r1",
        }
    }
}

impl fmt::Display for KeyExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `[tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain; empty = generate a development certificate.
    #[serde(deserialize_with = "optional_path")]
    pub cert: Option<PathBuf>,
    /// PEM private key; empty = generate a development certificate.
    #[serde(deserialize_with = "optional_path")]
    pub key: Option<PathBuf>,
    /// Where development certificates are written and reused from.
    pub self_signed_dir: PathBuf,
    /// Names the development certificate is valid for.
    pub self_signed_hosts: Vec<String>,
    /// Lowest protocol version offered.
    pub min_version: TlsVersion,
    /// `[[tls.certificate]]`: more certificates, chosen by SNI. After
    /// `cert`/`key` (when set), which stays the default.
    #[serde(rename = "certificate", deserialize_with = "certificate_entries")]
    pub certificates: Vec<CertificateEntry>,
    /// Key exchange groups in order of preference (TCP and QUIC).
    pub key_exchange: Vec<KeyExchange>,
    /// 0-RTT early data (HTTP/3). Off: refused. On: accepted, and a request
    /// that is not idempotent and arrived as early data gets 425 Too Early.
    pub early_data: bool,
    /// PEM file of the CA(s) client certificates must chain to.
    #[serde(deserialize_with = "optional_path")]
    pub client_ca: Option<PathBuf>,
    /// Whether clients are asked for a certificate.
    pub client_auth: ClientAuth,
    /// PEM file of certificate revocation lists for client certificates.
    #[serde(deserialize_with = "optional_path")]
    pub client_crl: Option<PathBuf>,
}

impl Tls {
    /// The client-certificate settings of `[tls]`.
    pub fn client(&self) -> ClientCertificates {
        ClientCertificates {
            ca: self.client_ca.clone(),
            auth: self.client_auth,
            crl: self.client_crl.clone(),
        }
    }

    /// The client-certificate settings of one site: its own keys, the
    /// others from `[tls]`.
    pub fn client_for(&self, entry: &CertificateEntry) -> ClientCertificates {
        let base = self.client();
        match &entry.client {
            None => base,
            Some(own) => ClientCertificates {
                ca: own.ca.clone().or(base.ca),
                auth: own.auth.unwrap_or(base.auth),
                crl: own.crl.clone().or(base.crl),
            },
        }
    }

    /// Whether any site asks clients for certificates.
    pub fn any_client_auth(&self) -> bool {
        self.client_auth != ClientAuth::None
            || self
                .certificates
                .iter()
                .any(|e| self.client_for(e).auth != ClientAuth::None)
    }
}

/// Whether clients are asked for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Not asked.
    None,
    /// Asked; a client without one is served (without an identity).
    Optional,
    /// A client without a verified certificate fails the handshake.
    Required,
}

impl fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientAuth::None => "none",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        })
    }
}

/// Client-certificate settings of one site, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientCertificates {
    /// The CA(s) certificates must chain to.
    pub ca: Option<PathBuf>,
    /// Whether clients are asked.
    pub auth: ClientAuth,
    /// Revocation lists.
    pub crl: Option<PathBuf>,
}

impl ClientCertificates {
    /// `client_auth` other than `none` needs a CA; the files must hold what they say.
    pub(super) fn validate(&self, table: &str) -> Result<(), (String, String)> {
        if self.auth == ClientAuth::None {
            return Ok(());
        }
        let Some(ca) = &self.ca else {
            return Err((
                format!("{table}.client_ca"),
                format!(
                    "client_auth = \"{}\" needs client_ca: the PEM file of the CA that signs client certificates",
                    self.auth
                ),
            ));
        };
        let pem = std::fs::read(ca).map_err(|e| {
            (
                format!("{table}.client_ca"),
                format!("cannot read {}: {e}", ca.display()),
            )
        })?;
        let certs = pem_items(&pem, "CERTIFICATE");
        if certs == 0 {
            return Err((
                format!("{table}.client_ca"),
                format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    ca.display()
                ),
            ));
        }
        if let Some(crl) = &self.crl {
            let pem = std::fs::read(crl).map_err(|e| {
                (
                    format!("{table}.client_crl"),
                    format!("cannot read {}: {e}", crl.display()),
                )
            })?;
            if pem_items(&pem, "X509 CRL") == 0 {
                return Err((
                    format!("{table}.client_crl"),
                    format!(
                        "{} holds no PEM revocation list (-----BEGIN X509 CRL-----)",
                        crl.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Counts PEM sections of one kind.
fn pem_items(pem: &[u8], label: &str) -> usize {
    let begin = format!("-----BEGIN {label}-----");
    String::from_utf8_lossy(pem).matches(begin.as_str()).count()
}

/// Client-certificate keys written in one `[[tls.certificate]]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientOverride {
    /// `client_ca`
    pub ca: Option<PathBuf>,
    /// `client_auth`
    pub auth: Option<ClientAuth>,
    /// `client_crl`
    pub crl: Option<PathBuf>,
}

/// One `[[tls.certificate]]`: a PEM chain and its key, served to clients
/// whose SNI is one of `names`.
#[derive(Clone)]
pub struct CertificateEntry {
    /// PEM certificate chain, server certificate first.
    pub cert: PathBuf,
    /// PEM private key of the first certificate.
    pub key: PathBuf,
    /// Names it is chosen for (lower case, no trailing dot; `*.example.com`
    /// for one label). Empty: the DNS names in the certificate.
    pub names: Vec<String>,
    /// Client-certificate keys of this site; none = `[tls]`'s.
    pub client: Option<ClientOverride>,
    /// Where `cert`, `key` and each name are in the file, for messages.
    pub positions: EntryPositions,
}

/// 1-based line and column of the parts of a `[[tls.certificate]]`; `None`
/// when the entry did not come from a file.
#[derive(Debug, Clone, Default)]
pub struct EntryPositions {
    /// The `cert` value.
    pub cert: Option<(usize, usize)>,
    /// The `key` value.
    pub key: Option<(usize, usize)>,
    /// Each of `names`, in order.
    pub names: Vec<Option<(usize, usize)>>,
    /// Byte offsets of the above, turned into lines and columns once the text is known.
    offsets: Vec<usize>,
}

impl fmt::Debug for CertificateEntry {
    /// The settings only: where they were written is not what they mean, so
    /// a config printed and parsed again compares equal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateEntry")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("names", &self.names)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl CertificateEntry {
    /// Fills in lines and columns from the byte offsets the parser recorded.
    pub(super) fn locate(&mut self, text: &str) {
        let mut at = self.positions.offsets.iter().map(|&o| Some(line_col(text, o)));
        self.positions.cert = at.next().flatten();
        self.positions.key = at.next().flatten();
        self.positions.names = at.collect();
    }
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            cert: None,
            key: None,
            self_signed_dir: PathBuf::from("certs"),
            self_signed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            min_version: TlsVersion::Tls12,
            certificates: Vec::new(),
            key_exchange: KeyExchange::DEFAULT.to_vec(),
            early_data: false,
            client_ca: None,
            client_auth: ClientAuth::None,
            client_crl: None,
        }
    }
}

/// `[[tls.certificate]]` as written, with the offsets of its values.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificateEntry {
    cert: toml::Spanned<PemPath>,
    key: toml::Spanned<PemPath>,
    #[serde(default)]
    names: Vec<toml::Spanned<CertificateName>>,
    #[serde(default, deserialize_with = "optional_path")]
    client_ca: Option<PathBuf>,
    #[serde(default)]
    client_auth: Option<ClientAuth>,
    #[serde(default, deserialize_with = "optional_path")]
    client_crl: Option<PathBuf>,
}

/// A non-empty file path (validated where it is written, for the position).
struct PemPath(PathBuf);

impl<'de> Deserialize<'de> for PemPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Err(de::Error::custom("is empty; expected the path of a PEM file"));
        }
        Ok(PemPath(PathBuf::from(s)))
    }
}

/// A name a certificate is chosen for, normalised.
struct CertificateName(String);

impl<'de> Deserialize<'de> for CertificateName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_name(&s).map(CertificateName).map_err(de::Error::custom)
    }
}

fn certificate_entries<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<CertificateEntry>, D::Error> {
    let raw = Vec::<RawCertificateEntry>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|e| {
            let mut offsets = vec![e.cert.span().start, e.key.span().start];
            offsets.extend(e.names.iter().map(|n| n.span().start));
            let client = ClientOverride {
                ca: e.client_ca,
                auth: e.client_auth,
                crl: e.client_crl,
            };
            CertificateEntry {
                client: (client != ClientOverride::default()).then_some(client),
                cert: e.cert.into_inner().0,
                key: e.key.into_inner().0,
                names: e.names.into_iter().map(|n| n.into_inner().0).collect(),
                positions: EntryPositions {
                    offsets,
                    ..EntryPositions::default()
                },
            }
        })
        .collect())
}
