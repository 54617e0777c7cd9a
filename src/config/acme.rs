//! `[acme]`: automatic certificates. Parsed here into typed values; the
//! client that uses them is [`crate::acme`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::values::{optional_path, parse_duration, parse_name};

/// The Let's Encrypt production directory (`directory = "letsencrypt"`).
pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// The Let's Encrypt staging directory (`directory = "letsencrypt-staging"`).
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// A way of proving control of a name to the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ChallengeKind {
    /// A TLS handshake on the HTTPS listener with ALPN `acme-tls/1`.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// `GET /.well-known/acme-challenge/<token>` on `listen.http`.
    #[serde(rename = "http-01")]
    Http01,
}

impl ChallengeKind {
    /// As written in the config and in the ACME protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
            ChallengeKind::Http01 => "http-01",
        }
    }
}

impl fmt::Display for ChallengeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[acme]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Acme {
    /// Names to get a certificate for, one certificate per name
    /// (normalised). Empty = ACME off.
    #[serde(deserialize_with = "acme_names")]
    pub names: Vec<String>,
    /// Account contact; empty = none.
    #[serde(deserialize_with = "optional_string")]
    pub email: Option<String>,
    /// The directory as written: a URL, `letsencrypt` or `letsencrypt-staging`.
    pub directory: String,
    /// Extra roots for the directory's own HTTPS; empty = the system roots.
    #[serde(deserialize_with = "optional_path")]
    pub directory_ca: Option<PathBuf>,
    /// Challenge types in preference order. When not written, both, with
    /// http-01 dropped at parse time if `listen.http` is empty (so only a
    /// written http-01 without `listen.http` is an error).
    pub challenges: Vec<ChallengeKind>,
    /// Account key, certificates and keys; empty = `acme/` beside the config.
    #[serde(deserialize_with = "optional_path")]
    pub storage: Option<PathBuf>,
    /// External account binding: key id.
    #[serde(deserialize_with = "optional_string")]
    pub eab_kid: Option<String>,
    /// External account binding: HMAC key, base64url as the CA gives it.
    #[serde(deserialize_with = "optional_string")]
    pub eab_hmac_key: Option<String>,
    /// Renew when this much lifetime is left; empty = a third of the lifetime.
    #[serde(deserialize_with = "optional_duration")]
    pub renew_before: Option<Duration>,
    /// Also get a certificate for every exact `[[route]]` host (wildcard
    /// hosts need dns-01 and are left out).
    pub enabled: bool,
    /// The ACME profile to order (e.g. Let's Encrypt's "shortlived"); empty
    /// = the CA's default. Checked against the directory's `meta.profiles`.
    pub profile: String,
}

impl Default for Acme {
    fn default() -> Self {
        Acme {
            names: Vec::new(),
            email: None,
            directory: "letsencrypt".into(),
            directory_ca: None,
            challenges: vec![ChallengeKind::TlsAlpn01, ChallengeKind::Http01],
            storage: None,
            eab_kid: None,
            eab_hmac_key: None,
            renew_before: None,
            enabled: false,
            profile: String::new(),
        }
    }
}

impl Acme {
    /// Whether certificates are ordered at all (names given, or derived
    /// from the route hosts with `enabled = true`).
    pub fn active(&self) -> bool {
        !self.names.is_empty()
    }

    /// The directory URL, with the Let's Encrypt words resolved.
    pub fn directory_url(&self) -> &str {
        match self.directory.trim() {
            "letsencrypt" => LETSENCRYPT,
            "letsencrypt-staging" => LETSENCRYPT_STAGING,
            url => url,
        }
    }

    /// Where the account, certificates and keys live.
    pub fn storage_dir(&self) -> PathBuf {
        self.storage.clone().unwrap_or_else(|| PathBuf::from("acme"))
    }

    /// The challenges to offer, in order: without `listen.http`, http-01 is
    /// left out (validation has already refused it when it was written).
    pub fn usable_challenges(&self, has_http_listener: bool) -> Vec<ChallengeKind> {
        self.challenges
            .iter()
            .copied()
            .filter(|c| has_http_listener || *c != ChallengeKind::Http01)
            .collect()
    }

    /// Fills in what depends on where the config file is: `storage`
    /// defaults to `acme/` beside it.
    pub fn resolve_beside(&mut self, config_file: &Path) {
        if self.storage.is_none() {
            let dir = config_file.parent().unwrap_or(Path::new(""));
            self.storage = Some(dir.join("acme"));
        }
    }

    /// Checks that need more than one key: (key, message) on failure.
    pub fn validate(&self, has_http_listener: bool) -> Result<(), (String, String)> {
        let err = |key: &str, m: String| Err((format!("acme.{key}"), m));
        let url = self.directory_url();
        if !url.starts_with("https://") && !url.starts_with("http://") {
            return err(
                "directory",
                format!(
                    "{:?} is not a URL; expected \"letsencrypt\", \"letsencrypt-staging\" or the https:// URL of an ACME directory",
                    self.directory
                ),
            );
        }
        if self.challenges.is_empty() {
            return err(
                "challenges",
                "is empty; expected [\"tls-alpn-01\", \"http-01\"] or one of them".into(),
            );
        }
        for (i, c) in self.challenges.iter().enumerate() {
            if self.challenges[..i].contains(c) {
                return err("challenges", format!("lists {c} twice"));
            }
        }
        if self.active() && self.challenges.contains(&ChallengeKind::Http01) && !has_http_listener {
            return err(
                "challenges",
                "lists http-01, but listen.http is empty: the CA would find nothing on port 80; set listen.http = \"0.0.0.0:80\" or remove \"http-01\"".into(),
            );
        }
        if self.active() && self.usable_challenges(has_http_listener).is_empty() {
            return err("challenges", "leaves no challenge tlsfront can answer".into());
        }
        if let Some(email) = &self.email {
            if !email.contains('@') || email.contains(char::is_whitespace) {
                return err("email", format!("{email:?} is not an email address"));
            }
        }
        match (&self.eab_kid, &self.eab_hmac_key) {
            (Some(_), None) => return err("eab_hmac_key", "eab_kid is set but eab_hmac_key is empty; the CA gives both".into()),
            (None, Some(_)) => return err("eab_kid", "eab_hmac_key is set but eab_kid is empty; the CA gives both".into()),
            (Some(_), Some(key)) if decode_hmac_key(key).is_none() => {
                return err(
                    "eab_hmac_key",
                    "is not base64url (as the CA shows it, e.g. \"zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W\")".into(),
                )
            }
            _ => {}
        }
        if self.profile.trim() != self.profile || self.profile.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return err(
                "profile",
                format!(
                    "{:?} is not a profile name; expected e.g. \"shortlived\" or \"classic\"",
                    self.profile
                ),
            );
        }
        if self.renew_before.is_some_and(|d| d.is_zero()) {
            return err(
                "renew_before",
                "must be greater than zero (empty = a third of the lifetime)".into(),
            );
        }
        Ok(())
    }

    /// The `[acme]` section as TOML (for `Display` of the whole config).
    /// `challenges` is printed as used: without `listen.http`, no http-01.
    pub fn write_toml(
        &self,
        f: &mut fmt::Formatter<'_>,
        has_http_listener: bool,
        quote: impl Fn(&str) -> String,
    ) -> fmt::Result {
        let opt = |s: &Option<String>| quote(s.as_deref().unwrap_or(""));
        let path = |p: &Option<PathBuf>| quote(&p.as_ref().map(|p| p.display().to_string()).unwrap_or_default());
        let list = |items: Vec<String>| format!("[{}]", items.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", "));
        writeln!(f, "\n[acme]")?;
        writeln!(f, "enabled = {}", self.enabled)?;
        writeln!(f, "names = {}", list(self.names.clone()))?;
        writeln!(f, "email = {}", opt(&self.email))?;
        writeln!(f, "directory = {}", quote(&self.directory))?;
        writeln!(f, "directory_ca = {}", path(&self.directory_ca))?;
        writeln!(
            f,
            "challenges = {}",
            list(
                self.usable_challenges(has_http_listener)
                    .iter()
                    .map(|c| c.to_string())
                    .collect()
            )
        )?;
        writeln!(f, "storage = {}", path(&self.storage))?;
        writeln!(f, "eab_kid = {}", opt(&self.eab_kid))?;
        writeln!(f, "eab_hmac_key = {}", opt(&self.eab_hmac_key))?;
        writeln!(f, "profile = {}", quote(&self.profile))?;
        write!(
            f,
            "renew_before = {}",
            quote(
                &self
                    .renew_before
                    .map(|d| humantime::format_duration(d).to_string())
                    .unwrap_or_default()
            )
        )
    }
}

/// Decodes an `eab_hmac_key` (base64url, padded or not).
pub fn decode_hmac_key(key: &str) -> Option<Vec<u8>> {
    let key = key.trim().trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key)
        .ok()
        .filter(|k| !k.is_empty())
}

fn acme_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    let mut names: Vec<String> = Vec::with_capacity(raw.len());
    for n in &raw {
        let name = parse_name(n).map_err(de::Error::custom)?;
        if name.starts_with("*.") {
            return Err(de::Error::custom(format!(
                "{n:?}: a wildcard certificate needs the dns-01 challenge, which tlsfront does not answer; list each name"
            )));
        }
        if names.contains(&name) {
            return Err(de::Error::custom(format!("{n:?} is listed twice")));
        }
        names.push(name);
    }
    Ok(names)
}

fn optional_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.trim().is_empty()).then(|| s.trim().to_string()))
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    parse_duration(&s).map(Some).map_err(de::Error::custom)
}
