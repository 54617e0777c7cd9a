//! TLS: rustls server configuration from PEM files, and development
//! certificates (a local CA plus a leaf it signs) made with rcgen.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::{ClientAuth, ClientCertificates, KeyExchange, TlsVersion};

/// The ALPN protocol of tls-alpn-01 validation connections (RFC 8737);
/// here, where the server configuration offers it.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A certificate or key that cannot be used, naming the file.
#[derive(Debug)]
pub struct TlsError {
    /// The file involved.
    pub path: PathBuf,
    /// What went wrong and what was expected.
    pub message: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for TlsError {}

fn err(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// ALPN protocols offered, in preference order.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Builds the server configuration from a PEM chain and a PEM key.
pub fn server_config(cert: &Path, key: &Path, min_version: TlsVersion) -> Result<Arc<ServerConfig>, TlsError> {
    let certified = certified_key(cert, key)?;
    server_config_with_resolver(
        Arc::new(rustls::sign::SingleCertAndKey::from(certified)),
        min_version,
        &KeyExchange::DEFAULT,
        cert,
        false,
    )
}

/// aws-lc-rs with the key exchange groups of `tls.key_exchange`, in that
/// order. rustls takes the first group of the client's list that is also
/// here; the order matters for which group a HelloRetryRequest asks for.
pub fn crypto_provider(groups: &[KeyExchange]) -> CryptoProvider {
    use rustls::crypto::aws_lc_rs::kx_group;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = groups
        .iter()
        .map(|g| match g {
            KeyExchange::X25519MLKEM768 => kx_group::X25519MLKEM768,
            KeyExchange::X25519 => kx_group::X25519,
            KeyExchange::Secp256r1 => kx_group::SECP256R1,
            KeyExchange::Secp384r1 => kx_group::SECP384R1,
        })
        .collect();
    provider
}

/// The name of a negotiated key exchange group, as the access log and the
/// metric show it (IANA names: "X25519MLKEM768", "X25519", "secp256r1").
pub fn group_name(group: rustls::NamedGroup) -> &'static str {
    use rustls::NamedGroup;
    match group {
        NamedGroup::X25519MLKEM768 => "X25519MLKEM768",
        NamedGroup::X25519 => "X25519",
        NamedGroup::secp256r1 => "secp256r1",
        NamedGroup::secp384r1 => "secp384r1",
        NamedGroup::secp521r1 => "secp521r1",
        NamedGroup::MLKEM768 => "MLKEM768",
        NamedGroup::secp256r1MLKEM768 => "secp256r1MLKEM768",
        _ => "other",
    }
}

/// The group rustls will negotiate for a ClientHello listing `offered` (in
/// the client's order) against the server's `ours`: the first offered group
/// the server has, as rustls' server chooses (client order, rustls 0.23).
/// For QUIC, where quinn does not expose the negotiated group.
pub fn chosen_group(offered: &[rustls::NamedGroup], ours: &[KeyExchange]) -> Option<&'static str> {
    offered
        .iter()
        .map(|g| group_name(*g))
        .find(|name| ours.iter().any(|k| k.name() == *name))
}

/// Wraps a connection's certificate resolver to note which key exchange
/// group its handshake settles on (rustls' choice, [`chosen_group`]), for
/// transports that do not expose it (QUIC through quinn). One per connection.
#[derive(Debug)]
pub struct GroupObserver {
    inner: Arc<dyn rustls::server::ResolvesServerCert>,
    ours: Vec<KeyExchange>,
    chosen: Arc<std::sync::OnceLock<&'static str>>,
}

impl GroupObserver {
    /// Observes `inner`'s handshakes against the server's groups `ours`;
    /// the group is written to `chosen` when the ClientHello arrives.
    pub fn new(
        inner: Arc<dyn rustls::server::ResolvesServerCert>,
        ours: &[KeyExchange],
        chosen: Arc<std::sync::OnceLock<&'static str>>,
    ) -> Self {
        GroupObserver {
            inner,
            ours: ours.to_vec(),
            chosen,
        }
    }
}

impl rustls::server::ResolvesServerCert for GroupObserver {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(group) = chosen_group(hello.named_groups().unwrap_or_default(), &self.ours) {
            let _ = self.chosen.set(group);
        }
        self.inner.resolve(hello)
    }

    fn only_raw_public_keys(&self) -> bool {
        self.inner.only_raw_public_keys()
    }
}

/// Builds the server configuration around a certificate resolver (one or
/// several certificates chosen by SNI). `origin` names a file in errors.
pub fn server_config_with_resolver(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    min_version: TlsVersion,
    key_exchange: &[KeyExchange],
    origin: &Path,
    acme_tls_alpn: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_for_clients(resolver, min_version, key_exchange, origin, acme_tls_alpn, None)
}

/// As [`server_config_with_resolver`], asking clients for certificates
/// when `clients` says so.
pub fn server_config_for_clients(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    min_version: TlsVersion,
    key_exchange: &[KeyExchange],
    origin: &Path,
    acme_tls_alpn: bool,
    clients: Option<&ClientCertificates>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let versions: &[&rustls::SupportedProtocolVersion] = match min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let provider = Arc::new(crypto_provider(key_exchange));
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| err(origin, format!("TLS versions: {e}")))?;
    let builder = match clients.filter(|c| c.auth != ClientAuth::None) {
        None => builder.with_no_client_auth(),
        Some(clients) => builder.with_client_cert_verifier(client_verifier(clients, provider)?),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // Last, so a client offering h2 or http/1.1 never gets it; the resolver
    // answers a ClientHello offering only this with the validation certificate.
    if acme_tls_alpn {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    // Resumption by ticket as well as by the default in-memory session cache.
    config.ticketer =
        rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| err(origin, format!("session tickets: {e}")))?;
    Ok(Arc::new(config))
}

/// The verifier of client certificates: chains to `client_ca`, not
/// revoked by `client_crl`; `optional` lets clients without one in.
fn client_verifier(
    clients: &ClientCertificates,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let ca = clients.ca.as_deref().unwrap_or(Path::new("client_ca"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_chain(ca)? {
        roots
            .add(cert)
            .map_err(|e| err(ca, format!("not a usable CA certificate: {e}")))?;
    }
    let mut builder = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    if let Some(crl) = &clients.crl {
        let lists: Vec<_> = rustls::pki_types::CertificateRevocationListDer::pem_file_iter(crl)
            .map_err(|e| err(crl, format!("cannot read revocation lists: {e}")))?
            .collect::<Result<_, _>>()
            .map_err(|e| err(crl, format!("not a PEM revocation list: {e}")))?;
        builder = builder.with_crls(lists);
    }
    if clients.auth == ClientAuth::Optional {
        builder = builder.allow_unauthenticated();
    }
    builder
        .build()
        .map_err(|e| err(ca, format!("client certificates: {e}")))
}

/// Which server configuration a handshake uses when some site asks for
/// client certificates: chosen by SNI, before the handshake goes on
/// (rustls asks for a certificate per configuration, not per name).
pub struct ClientAuthSites {
    /// The settings and configuration of each kind of site; `[tls]`'s first.
    sites: Vec<(Arc<ClientCertificates>, Arc<ServerConfig>)>,
    /// Exact names and `*.parent` wildcards of `[[tls.certificate]]` sites
    /// whose settings are their own, to an index in `sites`.
    by_name: std::collections::HashMap<String, usize>,
}

impl ClientAuthSites {
    /// `default` serves every name not in `named`.
    pub fn new(
        default: (ClientCertificates, Arc<ServerConfig>),
        named: Vec<(Vec<String>, ClientCertificates, Arc<ServerConfig>)>,
    ) -> ClientAuthSites {
        let mut sites = vec![(Arc::new(default.0), default.1)];
        let mut by_name = std::collections::HashMap::new();
        for (names, settings, config) in named {
            let index = match sites.iter().position(|(s, _)| **s == settings) {
                Some(i) => i,
                None => {
                    sites.push((Arc::new(settings), config));
                    sites.len() - 1
                }
            };
            for name in names {
                by_name.entry(name).or_insert(index);
            }
        }
        ClientAuthSites { sites, by_name }
    }

    fn index(&self, name: Option<&str>) -> usize {
        let Some(name) = name else { return 0 };
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.by_name.get(&format!("*.{parent}")))
            .copied()
            .unwrap_or(0)
    }

    /// The settings and configuration for a name (SNI, or a request's host).
    pub fn for_name(&self, name: Option<&str>) -> &(Arc<ClientCertificates>, Arc<ServerConfig>) {
        &self.sites[self.index(name)]
    }
}

/// Reads a PEM file holding a key and its chain (as ACME storage keeps
/// them), checking that they belong together.
pub fn certified_key_from_pem(pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a valid PEM certificate chain ({e})"))?;
    if chain.is_empty() {
        return Err("no certificate in it".into());
    }
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no usable private key in it ({e})"))?;
    CertifiedKey::from_der(chain, key, &rustls::crypto::aws_lc_rs::default_provider())
        .map_err(|e| format!("the key does not belong to the certificate ({e})"))
}

/// Reads a PEM chain and its key, and checks that the key belongs to the
/// first certificate of the chain.
pub fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = read_chain(cert)?;
    let key_der = read_key(key)?;
    CertifiedKey::from_der(chain, key_der, &rustls::crypto::aws_lc_rs::default_provider()).map_err(|e| {
        err(
            key,
            format!(
                "cannot be used with the certificate {} ({e}); expected the private key that belongs to the first certificate of the chain",
                cert.display()
            ),
        )
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = fs::read(path).map_err(|e| err(path, format!("cannot read the certificate file: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(path, format!("is not a valid PEM certificate chain ({e})")))?;
    if chain.is_empty() {
        return Err(err(
            path,
            "contains no certificate; expected a PEM file with \"-----BEGIN CERTIFICATE-----\" blocks, the server certificate first",
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = fs::read(path).map_err(|e| err(path, format!("cannot read the private key file: {e}")))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => err(
            path,
            "contains no private key; expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block",
        ),
        other => err(path, format!("is not a valid PEM private key ({other})")),
    })
}

/// Where development certificates are, after [`ensure_dev_certs`] or [`generate_dev_certs`].
#[derive(Debug, Clone)]
pub struct DevCerts {
    /// The CA certificate a client must trust.
    pub ca: PathBuf,
    /// The leaf certificate chain.
    pub cert: PathBuf,
    /// The leaf private key.
    pub key: PathBuf,
    /// Whether the CA already existed.
    pub ca_reused: bool,
    /// Whether the leaf was made now (false: an existing one is reused).
    pub leaf_generated: bool,
}

impl DevCerts {
    fn in_dir(dir: &Path) -> DevCerts {
        DevCerts {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca_reused: false,
            leaf_generated: false,
        }
    }
}

/// Reuses `cert.pem`/`key.pem` in `dir` when they exist; generates them (and
/// the CA when absent) when neither does. Existing files are never
/// overwritten: a certificate someone put there must not be replaced by a
/// development one, so a broken pair is an error, not a reason to regenerate.
pub fn ensure_dev_certs(dir: &Path, hosts: &[String], min_version: TlsVersion) -> Result<DevCerts, TlsError> {
    let found = DevCerts::in_dir(dir);
    ensure_leaf(dir, found, hosts, min_version)
}

/// The development certificate for one more host name (a route's host),
/// `hosts/<name>.pem` and `hosts/<name>-key.pem` under `dir` (`*` written as
/// `_`), signed by the same development CA as `cert.pem`. Reused when both
/// files exist; a `*.example.com` name gets a wildcard SAN.
pub fn ensure_dev_host_cert(dir: &Path, host: &str, min_version: TlsVersion) -> Result<DevCerts, TlsError> {
    let file = host.replace('*', "_");
    let hosts_dir = dir.join("hosts");
    let found = DevCerts {
        ca: dir.join("ca.pem"),
        cert: hosts_dir.join(format!("{file}.pem")),
        key: hosts_dir.join(format!("{file}-key.pem")),
        ca_reused: false,
        leaf_generated: false,
    };
    ensure_leaf(dir, found, &[host.to_string()], min_version)
}

fn ensure_leaf(
    dir: &Path,
    mut found: DevCerts,
    hosts: &[String],
    min_version: TlsVersion,
) -> Result<DevCerts, TlsError> {
    match (found.cert.exists(), found.key.exists()) {
        (true, true) => {
            server_config(&found.cert, &found.key, min_version)?;
            found.ca_reused = found.ca.exists();
            Ok(found)
        }
        (false, false) => write_dev_leaf(dir, found, hosts),
        (true, false) => Err(err(
            &found.key,
            format!(
                "is missing while {} exists; remove it to have both generated, or add the key",
                found.cert.display()
            ),
        )),
        (false, true) => Err(err(
            &found.cert,
            format!(
                "is missing while {} exists; remove it to have both generated, or add the certificate",
                found.key.display()
            ),
        )),
    }
}

/// Writes a development CA (reused when `ca.pem` + `ca-key.pem` exist) and a
/// leaf certificate for `hosts` signed by it. Key files get mode 0600.
pub fn generate_dev_certs(dir: &Path, hosts: &[String]) -> Result<DevCerts, TlsError> {
    write_dev_leaf(dir, DevCerts::in_dir(dir), hosts)
}

fn write_dev_leaf(dir: &Path, mut out: DevCerts, hosts: &[String]) -> Result<DevCerts, TlsError> {
    fs::create_dir_all(dir).map_err(|e| err(dir, format!("cannot create the directory: {e}")))?;
    if let Some(parent) = out.cert.parent() {
        fs::create_dir_all(parent).map_err(|e| err(parent, format!("cannot create the directory: {e}")))?;
    }
    let (ca_cert, ca_key, ca_reused) = dev_ca(dir, &out.ca)?;
    out.ca_reused = ca_reused;
    let (chain, key) = sign_dev_leaf(dir, hosts, &ca_cert, &ca_key)?;
    write_file(&out.key, key.as_bytes(), true)?;
    write_file(&out.cert, chain.as_bytes(), false)?;
    out.leaf_generated = true;
    Ok(out)
}

/// The development CA in `dir`: reused when `ca.pem` and `ca-key.pem` exist,
/// else created. Returns it and whether it was reused.
fn dev_ca(dir: &Path, ca_path: &Path) -> Result<(Certificate, KeyPair, bool), TlsError> {
    let ca_key_path = dir.join("ca-key.pem");
    if ca_path.exists() && ca_key_path.exists() {
        let key_pem =
            fs::read_to_string(&ca_key_path).map_err(|e| err(&ca_key_path, format!("cannot read the CA key: {e}")))?;
        let key =
            KeyPair::from_pem(&key_pem).map_err(|e| err(&ca_key_path, format!("is not a usable CA key ({e})")))?;
        let cert_pem = fs::read(ca_path).map_err(|e| err(ca_path, format!("cannot read the CA: {e}")))?;
        let der = CertificateDer::from_pem_slice(&cert_pem)
            .map_err(|e| err(ca_path, format!("is not a PEM certificate ({e})")))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| err(ca_path, format!("is not a usable CA certificate ({e})")))?;
        // The CA is tlsfront's own: its parameters are made again (rather than
        // parsed by rcgen, whose parser pulls ring into the binary) and
        // checked against the file, so the leaf chains to the ca.pem the
        // user already trusts: the same name, the same key.
        let mut params = dev_ca_params(dir)?;
        params.not_before = parsed.validity().not_before.to_datetime();
        params.not_after = parsed.validity().not_after.to_datetime();
        let cert = params
            .self_signed(&key)
            .map_err(|e| err(ca_path, format!("cannot sign with {} ({e})", ca_key_path.display())))?;
        if parsed.public_key().raw != key.public_key_der().as_slice() {
            return Err(err(
                ca_path,
                format!(
                    "does not match {}; delete both to make a new development CA",
                    ca_key_path.display()
                ),
            ));
        }
        let (_, remade) = x509_parser::parse_x509_certificate(cert.der().as_ref())
            .map_err(|e| err(ca_path, format!("cannot read the CA back ({e})")))?;
        if remade.subject().as_raw() != parsed.subject().as_raw() {
            return Err(err(
                ca_path,
                "is not a tlsfront development CA (another name); delete ca.pem and ca-key.pem to make a new one",
            ));
        }
        return Ok((cert, key, true));
    }
    let key = KeyPair::generate().map_err(|e| err(dir, format!("cannot generate a key: {e}")))?;
    let mut params = dev_ca_params(dir)?;
    let (start, end) = validity(3650);
    params.not_before = start;
    params.not_after = end;
    let cert = params
        .self_signed(&key)
        .map_err(|e| err(dir, format!("cannot sign the CA: {e}")))?;
    write_file(&ca_key_path, key.serialize_pem().as_bytes(), true)?;
    write_file(ca_path, cert.pem().as_bytes(), false)?;
    Ok((cert, key, false))
}

/// The development CA's name and constraints.
fn dev_ca_params(dir: &Path) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(dir, e.to_string()))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "tlsfront development CA");
    dn.push(DnType::OrganizationName, "tlsfront");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// A leaf for `hosts` signed by the CA: (PEM chain leaf + CA, PEM key).
fn sign_dev_leaf(
    dir: &Path,
    hosts: &[String],
    ca_cert: &Certificate,
    ca_key: &KeyPair,
) -> Result<(String, String), TlsError> {
    let leaf_key = KeyPair::generate().map_err(|e| err(dir, format!("cannot generate a key: {e}")))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(dir, e.to_string()))?;
    params.subject_alt_names = hosts
        .iter()
        .map(|h| {
            let h = h.trim().trim_start_matches('[').trim_end_matches(']');
            match h.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => h
                    .to_string()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|_| err(dir, format!("{h:?} is not a valid host name"))),
            }
        })
        .collect::<Result<_, _>>()?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        hosts.first().map(String::as_str).unwrap_or("localhost"),
    );
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    // Browsers reject leaf certificates valid for more than 398 days.
    let (start, end) = validity(397);
    params.not_before = start;
    params.not_after = end;
    let leaf = params
        .signed_by(&leaf_key, ca_cert, ca_key)
        .map_err(|e| err(dir, format!("cannot sign the certificate: {e}")))?;
    let mut chain = leaf.pem();
    chain.push_str(&ca_cert.pem());
    Ok((chain, leaf_key.serialize_pem()))
}

/// From yesterday (clock skew) to `days` from now.
fn validity(days: i64) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (now - time::Duration::days(1), now + time::Duration::days(days))
}

fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), TlsError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options
        .open(path)
        .map_err(|e| err(path, format!("cannot write: {e}")))?;
    #[cfg(unix)]
    if secret {
        // `mode` only applies to new files: an existing key file is tightened too.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(|e| err(path, format!("cannot chmod 0600: {e}")))?;
    }
    file.write_all(contents)
        .map_err(|e| err(path, format!("cannot write: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
    }

    #[test]
    fn generates_loads_and_reuses_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = generate_dev_certs(dir.path(), &hosts()).unwrap();
        assert!(!first.ca_reused);
        server_config(&first.cert, &first.key, TlsVersion::Tls12).unwrap();
        let ca_before = fs::read(&first.ca).unwrap();
        let leaf_before = fs::read(&first.cert).unwrap();
        let second = generate_dev_certs(dir.path(), &["example.test".into()]).unwrap();
        assert!(second.ca_reused);
        assert_eq!(fs::read(&second.ca).unwrap(), ca_before, "the CA must not change");
        assert_ne!(fs::read(&second.cert).unwrap(), leaf_before);
        server_config(&second.cert, &second.key, TlsVersion::Tls13).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["key.pem", "ca-key.pem"] {
                let mode = fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{f}");
            }
        }
    }

    #[test]
    fn existing_files_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_certs(dir.path(), &hosts(), TlsVersion::Tls12).unwrap();
        assert!(first.leaf_generated);
        let cert = fs::read(&first.cert).unwrap();
        // No CA next to them (a user's own pair): reused as they are.
        fs::remove_file(&first.ca).unwrap();
        let again = ensure_dev_certs(dir.path(), &hosts(), TlsVersion::Tls12).unwrap();
        assert!(!again.leaf_generated && !again.ca_reused);
        assert_eq!(fs::read(&again.cert).unwrap(), cert);
        // A broken pair is an error, not a reason to regenerate.
        fs::write(&first.key, "junk").unwrap();
        assert!(ensure_dev_certs(dir.path(), &hosts(), TlsVersion::Tls12).is_err());
        assert_eq!(fs::read(&first.cert).unwrap(), cert);
        fs::remove_file(&first.key).unwrap();
        assert!(ensure_dev_certs(dir.path(), &hosts(), TlsVersion::Tls12).is_err());
    }

    #[test]
    fn mismatched_key_is_named() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ca = generate_dev_certs(a.path(), &hosts()).unwrap();
        let cb = generate_dev_certs(b.path(), &hosts()).unwrap();
        let e = server_config(&ca.cert, &cb.key, TlsVersion::Tls12).unwrap_err();
        assert_eq!(e.path, cb.key);
        assert!(e.message.contains("belongs to"), "{e}");
    }

    #[test]
    fn unreadable_and_garbage_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = server_config(&missing, &missing, TlsVersion::Tls12).unwrap_err();
        assert!(
            e.to_string().contains("nope.pem") && e.message.contains("cannot read"),
            "{e}"
        );
        let junk = dir.path().join("junk.pem");
        fs::write(&junk, "hello").unwrap();
        let e = server_config(&junk, &junk, TlsVersion::Tls12).unwrap_err();
        assert!(e.message.contains("no certificate"), "{e}");
        let certs = generate_dev_certs(dir.path(), &hosts()).unwrap();
        let e = server_config(&certs.cert, &junk, TlsVersion::Tls12).unwrap_err();
        assert!(e.message.contains("no private key"), "{e}");
    }

    #[test]
    fn the_group_chosen_is_the_clients_first_that_the_server_has() {
        use rustls::NamedGroup as G;
        let all = KeyExchange::DEFAULT;
        // Chromium: hybrid first.
        assert_eq!(
            chosen_group(&[G::X25519MLKEM768, G::X25519, G::secp256r1], &all),
            Some("X25519MLKEM768")
        );
        // OpenSSL 3.0: classical only.
        assert_eq!(chosen_group(&[G::X25519, G::secp256r1], &all), Some("X25519"));
        // The operator dropped the hybrid group.
        let classical = [KeyExchange::X25519, KeyExchange::Secp256r1];
        assert_eq!(
            chosen_group(&[G::X25519MLKEM768, G::X25519], &classical),
            Some("X25519")
        );
        assert_eq!(chosen_group(&[G::secp521r1], &all), None);
    }

    #[test]
    fn the_provider_offers_the_configured_groups_in_order() {
        let p = crypto_provider(&[KeyExchange::X25519, KeyExchange::X25519MLKEM768]);
        let names: Vec<&str> = p.kx_groups.iter().map(|g| group_name(g.name())).collect();
        assert_eq!(names, ["X25519", "X25519MLKEM768"]);
        let default: Vec<&str> = crypto_provider(&KeyExchange::DEFAULT)
            .kx_groups
            .iter()
            .map(|g| group_name(g.name()))
            .collect();
        assert_eq!(default, ["X25519MLKEM768", "X25519", "secp256r1", "secp384r1"]);
    }

    /// Verifies `cert` for `name` against `ca` as a client would.
    fn verify(ca: &Path, cert: &Path, name: &str) -> Result<(), rustls::Error> {
        use rustls::client::danger::ServerCertVerifier;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        let chain = read_chain(cert).unwrap();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], rustls::pki_types::UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn host_certificates_are_signed_by_the_same_ca_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let main = ensure_dev_certs(dir.path(), &hosts(), TlsVersion::Tls12).unwrap();
        let ca_before = fs::read(&main.ca).unwrap();
        let wild = ensure_dev_host_cert(dir.path(), "*.app.test", TlsVersion::Tls12).unwrap();
        assert!(wild.leaf_generated && wild.ca_reused);
        assert_eq!(wild.cert, dir.path().join("hosts/_.app.test.pem"));
        verify(&main.ca, &wild.cert, "x.app.test").unwrap();
        assert!(
            verify(&main.ca, &wild.cert, "app.test").is_err(),
            "a wildcard is one label deep"
        );
        let exact = ensure_dev_host_cert(dir.path(), "api.test", TlsVersion::Tls12).unwrap();
        verify(&main.ca, &exact.cert, "api.test").unwrap();
        assert!(verify(&main.ca, &exact.cert, "other.test").is_err());
        // Reused, never rewritten; the CA never changes.
        let leaf = fs::read(&wild.cert).unwrap();
        let again = ensure_dev_host_cert(dir.path(), "*.app.test", TlsVersion::Tls12).unwrap();
        assert!(!again.leaf_generated);
        assert_eq!(fs::read(&again.cert).unwrap(), leaf);
        assert_eq!(fs::read(&main.ca).unwrap(), ca_before);
        // Without a CA yet, one is made first.
        let fresh = tempfile::tempdir().unwrap();
        let first = ensure_dev_host_cert(fresh.path(), "solo.test", TlsVersion::Tls12).unwrap();
        assert!(!first.ca_reused);
        verify(&first.ca, &first.cert, "solo.test").unwrap();
    }
}
