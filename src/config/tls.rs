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
            CertificateEntry {
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
