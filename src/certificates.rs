//! Several certificates, chosen by SNI.
//!
//! The certificates served are, in this order: `tls.cert`/`tls.key` when set
//! (so it stays the default, exactly as before), then each
//! `[[tls.certificate]]`, then development certificates when `tls.cert` is
//! unset: one for the `tls.self_signed_hosts` no configured certificate
//! covers, and one per extra host name (a route's host) nothing covers yet.
//! The first is the default, for clients without SNI or with a name no
//! certificate is for.
//!
//! A client's SNI picks a certificate by exact name first, then by a
//! `*.example.com` wildcard one label deep; case and a trailing dot do not
//! matter. The whole set is loaded once per configuration generation, so a
//! changed file reloads it with everything else, and a bad pair is rejected
//! while the previous generation keeps serving.
//!
//! `[acme] names` come from `acme.storage`, after the configured
//! certificates: a name whose file is there is served from it; a name with
//! none yet is refused (the handshake fails) rather than given any other
//! certificate, and a ClientHello offering only ALPN `acme-tls/1` gets the
//! open tls-alpn-01 validation certificate.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::acme::{Challenges, Storage};
use crate::config::{normalise_name, parse_name, CertificateEntry, Config, ConfigError};
use crate::tls::{self, TlsError};

/// A certificate set that cannot be used.
#[derive(Debug)]
pub enum CertificateError {
    /// A `[[tls.certificate]]` problem, with file, line and column.
    Config(ConfigError),
    /// A `tls.cert`/`tls.key` or development certificate problem.
    Tls(TlsError),
}

impl fmt::Display for CertificateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertificateError::Config(e) => e.fmt(f),
            CertificateError::Tls(e) => write!(f, "certificate problem: {e}"),
        }
    }
}

impl std::error::Error for CertificateError {}

impl From<TlsError> for CertificateError {
    fn from(e: TlsError) -> Self {
        CertificateError::Tls(e)
    }
}

/// Where a served certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `tls.cert` / `tls.key`.
    Single,
    /// `[[tls.certificate]]` number n (0-based, as in error keys).
    Entry(usize),
    /// A generated (or reused) development certificate.
    Development,
    /// Obtained by ACME, from `acme.storage`.
    Acme,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Single => f.write_str("tls.cert"),
            Origin::Entry(i) => write!(f, "tls.certificate[{i}]"),
            Origin::Development => f.write_str("development certificate"),
            Origin::Acme => f.write_str("acme"),
        }
    }
}

/// One certificate and key, loaded and checked.
#[derive(Debug, Clone)]
pub struct ServedCertificate {
    /// Where it came from.
    pub origin: Origin,
    /// The chain file.
    pub cert: PathBuf,
    /// The key file.
    pub key: PathBuf,
    /// Names it is chosen for (normalised); may be empty for the default.
    pub names: Vec<String>,
    /// Its `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
    certified: Arc<CertifiedKey>,
}

impl ServedCertificate {
    /// What it is called in logs and metrics: its first name, else its file.
    pub fn label(&self) -> String {
        self.names
            .first()
            .cloned()
            .unwrap_or_else(|| self.cert.display().to_string())
    }
}

/// Every certificate of one configuration generation.
#[derive(Debug, Clone)]
pub struct CertificateSet {
    /// In order: the first is the default.
    pub served: Vec<ServedCertificate>,
    /// The development CA, when a development certificate is served.
    pub dev_ca: Option<PathBuf>,
    /// `[acme] names` with no certificate in storage yet: refused.
    pub acme_missing: Vec<String>,
    /// Every ACME name's storage file, there or not (a new one reloads).
    pub acme_files: Vec<PathBuf>,
}

impl CertificateSet {
    /// Loads every configured certificate and, when `tls.cert` is unset,
    /// reuses or generates the development ones: for the
    /// `tls.self_signed_hosts` nothing covers, and for each of `extra_hosts`
    /// (route hosts) nothing covers. `source` names the config file in
    /// errors; `announce` logs what is served.
    pub fn load(
        config: &Config,
        source: &str,
        extra_hosts: &[String],
        announce: bool,
    ) -> Result<CertificateSet, CertificateError> {
        let mut set = CertificateSet::check(config, source)?;
        set.add_acme(config);
        if config.tls.cert.is_some() {
            if announce {
                set.announce();
            }
            return Ok(set);
        }
        let tls_cfg = &config.tls;
        if let Some(hosts) = self_signed_hosts_needed(&set.served, &tls_cfg.self_signed_hosts) {
            let dev = tls::ensure_dev_certs(&tls_cfg.self_signed_dir, &hosts, tls_cfg.min_version)?;
            if announce || dev.leaf_generated {
                let verb = if dev.leaf_generated { "generated" } else { "reusing" };
                tracing::info!(
                    "{verb} development certificate {} for {}, signed by the development CA {} (trust that CA in your browser or client)",
                    dev.cert.display(),
                    hosts.join(", "),
                    dev.ca.display(),
                );
            }
            set.served.push(load_served(&dev.cert, &dev.key, Origin::Development)?);
            set.dev_ca = dev.ca.exists().then(|| dev.ca.clone());
        }
        // An ACME name never gets a development certificate, even as a route host.
        let extra: Vec<String> = extra_hosts
            .iter()
            .filter(|h| parse_name(h).map_or(true, |n| !config.acme.names.contains(&n)))
            .cloned()
            .collect();
        for host in dev_cert_names(&set.served, &extra)? {
            let dev = tls::ensure_dev_host_cert(&tls_cfg.self_signed_dir, &host, tls_cfg.min_version)?;
            if announce || dev.leaf_generated {
                let verb = if dev.leaf_generated { "generated" } else { "reusing" };
                tracing::info!(
                    "{verb} development certificate {} for {host}, signed by the development CA {}",
                    dev.cert.display(),
                    dev.ca.display(),
                );
            }
            let mut served = load_served(&dev.cert, &dev.key, Origin::Development)?;
            // Reused files may be for more names; it is chosen for this one.
            served.names = vec![host];
            set.served.push(served);
            if set.dev_ca.is_none() {
                set.dev_ca = dev.ca.exists().then(|| dev.ca.clone());
            }
        }
        if announce {
            set.announce();
        }
        Ok(set)
    }

    /// Loads and checks the configured certificates only (`tls.cert` and
    /// `[[tls.certificate]]`), writing nothing: each pair must load and
    /// match, each listed name must be covered by its certificate, and no
    /// name may be chosen by two certificates.
    pub fn check(config: &Config, source: &str) -> Result<CertificateSet, CertificateError> {
        let mut served = Vec::new();
        if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
            served.push(load_served(cert, key, Origin::Single)?);
        }
        for (i, entry) in config.tls.certificates.iter().enumerate() {
            served.push(load_entry(i, entry, source, served.is_empty())?);
        }
        reject_duplicates(&served, &config.tls.certificates, source)?;
        reject_acme_overlap(&served, config, source)?;
        Ok(CertificateSet {
            served,
            dev_ca: None,
            acme_missing: Vec::new(),
            acme_files: Vec::new(),
        })
    }

    /// Adds what `acme.storage` holds for `[acme] names`; a missing or
    /// unreadable file leaves the name refused until the order succeeds.
    fn add_acme(&mut self, config: &Config) {
        let storage = Storage::new(config.acme.storage_dir());
        for name in &config.acme.names {
            let file = storage.certificate(name);
            self.acme_files.push(file.clone());
            if !file.exists() {
                self.acme_missing.push(name.clone());
                continue;
            }
            match load_served(&file, &file, Origin::Acme) {
                Ok(mut served) => {
                    served.names = vec![name.clone()];
                    self.served.push(served);
                }
                Err(e) => {
                    tracing::warn!("{name}: the stored ACME certificate is unusable ({e}); it will be ordered again");
                    self.acme_missing.push(name.clone());
                }
            }
        }
    }

    /// The rustls server configuration that serves this set; `challenges`
    /// answers tls-alpn-01 validations when `[acme]` is on.
    pub fn server_config(
        &self,
        min_version: crate::config::TlsVersion,
        key_exchange: &[crate::config::KeyExchange],
        challenges: Option<Arc<Challenges>>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let origin = self.served.first().map(|s| s.cert.as_path()).unwrap_or(Path::new("."));
        let alpn = challenges.is_some();
        let mut resolver = SniResolver::new(&self.served);
        resolver.refused = self.acme_missing.iter().cloned().collect();
        resolver.challenges = challenges;
        tls::server_config_with_resolver(Arc::new(resolver), min_version, key_exchange, origin, alpn)
    }

    /// One server configuration per kind of site when some site asks
    /// clients for certificates (`client_auth`); `None` when none does, and
    /// every handshake uses `base`.
    pub fn client_auth_sites(
        &self,
        config: &Config,
        base: &Arc<ServerConfig>,
        challenges: Option<Arc<Challenges>>,
    ) -> Result<Option<Arc<tls::ClientAuthSites>>, TlsError> {
        let t = &config.tls;
        if !t.any_client_auth() {
            return Ok(None);
        }
        let origin = self.served.first().map(|s| s.cert.as_path()).unwrap_or(Path::new("."));
        let build = |clients: &crate::config::ClientCertificates| -> Result<Arc<ServerConfig>, TlsError> {
            if clients.auth == crate::config::ClientAuth::None {
                return Ok(base.clone());
            }
            let mut resolver = SniResolver::new(&self.served);
            resolver.refused = self.acme_missing.iter().cloned().collect();
            resolver.challenges = challenges.clone();
            tls::server_config_for_clients(
                Arc::new(resolver),
                t.min_version,
                &t.key_exchange,
                origin,
                challenges.is_some(),
                Some(clients),
            )
        };
        let default = t.client();
        let default_config = build(&default)?;
        let mut named = Vec::new();
        for served in &self.served {
            let Origin::Entry(i) = served.origin else { continue };
            let Some(entry) = t.certificates.get(i) else { continue };
            let clients = t.client_for(entry);
            if clients != default {
                let config = build(&clients)?;
                named.push((served.names.clone(), clients, config));
            }
        }
        Ok(Some(Arc::new(tls::ClientAuthSites::new(
            (default, default_config),
            named,
        ))))
    }

    /// Every certificate and key file, to reload when one changes; ACME
    /// files are watched before they exist, so a new one is served at once.
    pub fn watch(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .served
            .iter()
            .filter(|s| s.origin != Origin::Acme)
            .flat_map(|s| [s.cert.clone(), s.key.clone()])
            .collect();
        files.extend(self.acme_files.iter().cloned());
        files
    }

    /// (label, notAfter) of each served certificate, for the expiry metric.
    pub fn expiry(&self) -> Vec<(String, i64)> {
        self.served.iter().map(|s| (s.label(), s.not_after)).collect()
    }

    fn announce(&self) {
        for (i, s) in self.served.iter().enumerate() {
            if s.origin == Origin::Development && i > 0 {
                continue;
            }
            let names = if s.names.is_empty() {
                "any name".to_string()
            } else {
                s.names.join(", ")
            };
            let default = if i == 0 && self.served.len() > 1 {
                " (default)"
            } else {
                ""
            };
            match s.origin {
                Origin::Single if self.served.len() == 1 => {
                    tracing::info!("certificate: {} (key {})", s.cert.display(), s.key.display())
                }
                Origin::Development => {}
                _ => tracing::info!(
                    "certificate {}: {} (key {}) for {names}{default}",
                    s.origin,
                    s.cert.display(),
                    s.key.display()
                ),
            }
        }
    }
}

/// The self-signed hosts that need the development certificate, when one
/// is needed: all of them when nothing is configured (as always), else
/// those no configured certificate covers, when a host name is among them
/// (an IP address alone needs none: without SNI the default is served).
fn self_signed_hosts_needed(configured: &[ServedCertificate], hosts: &[String]) -> Option<Vec<String>> {
    if configured.is_empty() {
        return Some(hosts.to_vec());
    }
    let uncovered: Vec<String> = hosts
        .iter()
        .filter(|h| match parse_name(h) {
            Ok(name) => !configured.iter().any(|s| covers(&s.names, &name)),
            Err(_) => true,
        })
        .cloned()
        .collect();
    let any_name = uncovered.iter().any(|h| parse_name(h).is_ok());
    any_name.then_some(uncovered)
}

/// The host names among `extra` (route hosts) that no certificate in
/// `served` covers: each gets a development certificate of its own when
/// `tls.cert` is unset. IP addresses are left out (SNI never carries one).
pub fn dev_cert_names(served: &[ServedCertificate], extra: &[String]) -> Result<Vec<String>, TlsError> {
    let mut out: Vec<String> = Vec::new();
    for host in extra {
        if host.trim().parse::<IpAddr>().is_ok() {
            continue;
        }
        let name = parse_name(host).map_err(|message| TlsError {
            path: PathBuf::from(host),
            message,
        })?;
        if !served.iter().any(|s| covers(&s.names, &name)) && !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

fn load_served(cert: &Path, key: &Path, origin: Origin) -> Result<ServedCertificate, TlsError> {
    let certified = tls::certified_key(cert, key)?;
    let leaf = certified.end_entity_cert().map_err(|e| TlsError {
        path: cert.to_path_buf(),
        message: format!("has no server certificate ({e})"),
    })?;
    let (names, not_after) = leaf_names_and_expiry(leaf).map_err(|message| TlsError {
        path: cert.to_path_buf(),
        message,
    })?;
    Ok(ServedCertificate {
        origin,
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        names,
        not_after,
        certified: Arc::new(certified),
    })
}

/// The DNS names in a certificate's subjectAltName (normalised) and its notAfter.
fn leaf_names_and_expiry(der: &CertificateDer<'_>) -> Result<(Vec<String>, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("is not a valid X.509 certificate ({e})"))?;
    let mut names: Vec<String> = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("has an unreadable subjectAltName ({e})"))?;
    for general in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
        if let x509_parser::extensions::GeneralName::DNSName(dns) = general {
            let name = normalise_name(dns);
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok((names, cert.validity().not_after.timestamp()))
}

fn load_entry(
    index: usize,
    entry: &CertificateEntry,
    source: &str,
    is_first: bool,
) -> Result<ServedCertificate, CertificateError> {
    let at = &entry.positions;
    let error = |field: &str, position: Option<(usize, usize)>, message: String| {
        CertificateError::Config(ConfigError {
            source: source.to_string(),
            position,
            key: Some(format!("tls.certificate[{index}].{field}")),
            message,
        })
    };
    let mut served = load_served(&entry.cert, &entry.key, Origin::Entry(index)).map_err(|e| {
        if e.path == entry.key {
            error("key", at.key, e.to_string())
        } else {
            error("cert", at.cert, e.to_string())
        }
    })?;
    if entry.names.is_empty() {
        if served.names.is_empty() && !is_first {
            return Err(error(
                "cert",
                at.cert,
                format!(
                    "{} has no DNS name in its subjectAltName, so no client could ever be given it; add `names`",
                    entry.cert.display()
                ),
            ));
        }
        return Ok(served);
    }
    for (j, name) in entry.names.iter().enumerate() {
        if !covers(&served.names, name) {
            let has = if served.names.is_empty() {
                "no DNS names".to_string()
            } else {
                served.names.join(", ")
            };
            return Err(error(
                &format!("names[{j}]"),
                at.names.get(j).copied().flatten(),
                format!(
                    "{name:?} is not covered by the certificate {} (it is for {has}); clients would reject it: remove the name or use a certificate for it",
                    entry.cert.display()
                ),
            ));
        }
    }
    served.names = entry.names.clone();
    Ok(served)
}

/// A name chosen by two certificates is an error at the second.
fn reject_duplicates(
    served: &[ServedCertificate],
    entries: &[CertificateEntry],
    source: &str,
) -> Result<(), CertificateError> {
    let mut owner: HashMap<&str, &ServedCertificate> = HashMap::new();
    for s in served {
        for (j, name) in s.names.iter().enumerate() {
            let Some(first) = owner.get(name.as_str()) else {
                owner.insert(name, s);
                continue;
            };
            let Origin::Entry(i) = s.origin else {
                continue;
            };
            let entry = &entries[i];
            let (field, position) = if entry.names.is_empty() {
                ("cert".to_string(), entry.positions.cert)
            } else {
                (format!("names[{j}]"), entry.positions.names.get(j).copied().flatten())
            };
            let first_at = match first.origin {
                Origin::Entry(k) => entries[k]
                    .positions
                    .cert
                    .map(|(l, _)| format!(", line {l}"))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            return Err(CertificateError::Config(ConfigError {
                source: source.to_string(),
                position,
                key: Some(format!("tls.certificate[{i}].{field}")),
                message: format!(
                    "{name:?} is also chosen by {} ({}{first_at}); a name may belong to one certificate only: list the names each one serves with `names`",
                    first.origin,
                    first.cert.display()
                ),
            }));
        }
    }
    Ok(())
}

/// An `[acme]` name that a configured certificate also serves: two sources
/// for one name would make which one a client gets depend on order.
fn reject_acme_overlap(served: &[ServedCertificate], config: &Config, source: &str) -> Result<(), CertificateError> {
    for (j, name) in config.acme.names.iter().enumerate() {
        if let Some(s) = served.iter().find(|s| covers(&s.names, name)) {
            return Err(CertificateError::Config(ConfigError {
                source: source.to_string(),
                position: None,
                key: Some(format!("acme.names[{j}]")),
                message: format!(
                    "{name:?} also has a certificate from {} ({}); a name gets its certificate from one place: remove it from acme.names or from the TLS files",
                    s.origin,
                    s.cert.display()
                ),
            }));
        }
    }
    Ok(())
}

/// Whether a certificate chosen for `names` is right for `name` (both
/// normalised): the same name, or a `*.parent` wildcard for one label of it.
pub fn covers(names: &[String], name: &str) -> bool {
    names.iter().any(|n| n == name) || wildcard_of(name).is_some_and(|w| names.contains(&w))
}

/// `a.example.com` → `*.example.com`; `None` for a wildcard or a single label.
fn wildcard_of(name: &str) -> Option<String> {
    if name.starts_with("*.") {
        return None;
    }
    let (_, parent) = name.split_once('.')?;
    (!parent.is_empty()).then(|| format!("*.{parent}"))
}

/// Chooses a certificate by the client's SNI.
#[derive(Debug)]
pub struct SniResolver {
    /// Exact names and `*.parent` wildcards, each to an index in `keys`.
    by_name: HashMap<String, usize>,
    keys: Vec<Arc<CertifiedKey>>,
    /// ACME names with no certificate yet: no certificate at all for them.
    refused: HashSet<String>,
    /// Open tls-alpn-01 challenges, when `[acme]` is on.
    challenges: Option<Arc<Challenges>>,
}

impl SniResolver {
    /// Indexes `served` by name; the first certificate with a name wins.
    pub fn new(served: &[ServedCertificate]) -> SniResolver {
        let mut by_name = HashMap::new();
        for (i, s) in served.iter().enumerate() {
            for name in &s.names {
                by_name.entry(name.clone()).or_insert(i);
            }
        }
        SniResolver {
            by_name,
            keys: served.iter().map(|s| s.certified.clone()).collect(),
            refused: HashSet::new(),
            challenges: None,
        }
    }

    /// The index of the certificate for `sni`: exact name, else wildcard,
    /// else 0 (the default).
    pub fn choose(&self, sni: Option<&str>) -> usize {
        let Some(sni) = sni else { return 0 };
        let name = normalise_name(sni);
        if let Some(&i) = self.by_name.get(&name) {
            return i;
        }
        wildcard_of(&name)
            .and_then(|w| self.by_name.get(&w).copied())
            .unwrap_or(0)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = client_hello.server_name().map(normalise_name);
        if let (Some(challenges), Some(alpn)) = (&self.challenges, client_hello.alpn()) {
            if crate::acme::is_validation_hello(alpn) {
                return challenges.tls_alpn_certificate(sni.as_deref()?);
            }
        }
        if sni.as_ref().is_some_and(|n| self.refused.contains(n)) {
            return None;
        }
        self.keys.get(self.choose(sni.as_deref())).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_are_normalised_and_validated() {
        assert_eq!(parse_name("Example.COM.").unwrap(), "example.com");
        assert_eq!(parse_name("*.Example.com").unwrap(), "*.example.com");
        for bad in [
            "",
            "a..b",
            "-a.b",
            "a b",
            "*.*.b",
            "a.*.b",
            "x*.b",
            "127.0.0.1",
            "::1",
            "[::1]",
            "a_b.c",
        ] {
            assert!(parse_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn coverage_is_exact_or_one_label_of_a_wildcard() {
        let san = names(&["example.com", "*.wild.test"]);
        assert!(covers(&san, "example.com"));
        assert!(covers(&san, "a.wild.test"));
        assert!(covers(&san, "*.wild.test"));
        assert!(!covers(&san, "wild.test"));
        assert!(!covers(&san, "a.b.wild.test"));
        assert!(!covers(&san, "www.example.com"));
        assert!(!covers(&san, "*.example.com"));
    }

    fn resolver(sets: &[&[&str]]) -> SniResolver {
        let by_name = sets
            .iter()
            .enumerate()
            .flat_map(|(i, ns)| ns.iter().map(move |n| (n.to_string(), i)))
            .fold(HashMap::new(), |mut m, (n, i)| {
                m.entry(n).or_insert(i);
                m
            });
        SniResolver {
            by_name,
            keys: Vec::new(),
            refused: HashSet::new(),
            challenges: None,
        }
    }

    #[test]
    fn choose_by_exact_then_wildcard_then_default() {
        let r = resolver(&[
            &["default.test"],
            &["a.test"],
            &["*.wild.test", "exact.wild.test"],
            &["x.wild.test"],
        ]);
        assert_eq!(r.choose(None), 0);
        assert_eq!(r.choose(Some("a.test")), 1);
        assert_eq!(r.choose(Some("A.Test.")), 1, "case and trailing dot do not matter");
        assert_eq!(r.choose(Some("b.wild.test")), 2);
        assert_eq!(r.choose(Some("x.wild.test")), 3, "an exact name beats a wildcard");
        assert_eq!(r.choose(Some("wild.test")), 0, "a wildcard does not cover its parent");
        assert_eq!(r.choose(Some("a.b.wild.test")), 0, "one label deep only");
        assert_eq!(r.choose(Some("unknown.test")), 0);
        assert_eq!(r.choose(Some("")), 0);
        assert_eq!(r.choose(Some(".")), 0);
    }

    #[test]
    fn dev_names_skip_covered_hosts_and_ips() {
        let served = |ns: &[&str]| ServedCertificate {
            origin: Origin::Entry(0),
            cert: PathBuf::from("c.pem"),
            key: PathBuf::from("k.pem"),
            names: names(ns),
            not_after: 0,
            certified: Arc::new(CertifiedKey::new(
                Vec::new(),
                rustls::crypto::aws_lc_rs::sign::any_supported_type(
                    &rustls::pki_types::PrivateKeyDer::from_pem_slice(
                        rcgen::KeyPair::generate().unwrap().serialize_pem().as_bytes(),
                    )
                    .unwrap(),
                )
                .unwrap(),
            )),
        };
        let set = [served(&["a.test", "*.wild.test"])];
        let extra = names(&["a.test", "B.test.", "x.wild.test", "*.other.test", "10.0.0.1", "b.test"]);
        assert_eq!(
            dev_cert_names(&set, &extra).unwrap(),
            names(&["b.test", "*.other.test"])
        );
        assert!(dev_cert_names(&set, &names(&["bad name"])).is_err());
        // The self-signed hosts: all when nothing is configured, else the
        // uncovered ones when a host name is among them.
        let hosts = names(&["localhost", "127.0.0.1"]);
        assert_eq!(self_signed_hosts_needed(&[], &hosts), Some(hosts.clone()));
        assert_eq!(self_signed_hosts_needed(&set, &hosts), Some(hosts.clone()));
        assert_eq!(self_signed_hosts_needed(&set, &names(&["127.0.0.1", "a.test"])), None);
    }

    #[test]
    fn route_hosts_get_development_certificates_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.tls.self_signed_dir = dir.path().join("certs");
        let extra = names(&["localhost", "API.test", "*.apps.test", "10.1.2.3"]);
        let set = CertificateSet::load(&config, "test.toml", &extra, false).unwrap();
        let labels: Vec<String> = set.served.iter().map(ServedCertificate::label).collect();
        // localhost is already in the self-signed certificate; the IP needs none.
        assert_eq!(labels, ["localhost", "api.test", "*.apps.test"]);
        assert!(set.served.iter().all(|s| s.origin == Origin::Development));
        assert_eq!(set.dev_ca, Some(dir.path().join("certs/ca.pem")));
        let r = SniResolver::new(&set.served);
        assert_eq!(r.choose(Some("api.test")), 1);
        assert_eq!(r.choose(Some("x.apps.test")), 2);
        assert_eq!(r.choose(None), 0);
        assert_eq!(set.watch().len(), 6);
        // With tls.cert set, no development certificate is made at all.
        config.tls.cert = Some(set.served[1].cert.clone());
        config.tls.key = Some(set.served[1].key.clone());
        let set = CertificateSet::load(&config, "test.toml", &extra, false).unwrap();
        assert_eq!(set.served.len(), 1);
        assert_eq!(set.served[0].origin, Origin::Single);
        assert!(set.dev_ca.is_none());
    }
}
