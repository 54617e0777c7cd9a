//! Automatic certificates (ACME, RFC 8555) with instant-acme.
//!
//! The life of a name: on start its certificate is served from `storage`
//! if there is one ([`crate::certificates`] loads it with the rest of a
//! generation); [`manage`] runs beside the listeners, and when a name has no
//! certificate or is due for renewal it takes the name's lock in storage,
//! orders, answers the challenge ([`Challenges`], asked by the TLS resolver
//! and the plain-HTTP listener) and writes the key and chain to storage. The
//! file watcher of [`crate::reload`] then swaps a new generation in, exactly
//! as for a renewed file: no restart, no dropped request. Replicas sharing
//! storage see the same file appear.

mod explain;
mod http_client;
pub mod renewal;
mod storage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, ExternalAccountKey, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;

use crate::config::{decode_hmac_key, Acme as AcmeConfig, ChallengeKind};
use crate::metrics::Metrics;

pub use explain::{problem_line, transport_line, Step};
pub use http_client::CaClient;
pub use storage::{OrderLock, Storage};

pub use crate::tls::ACME_TLS_ALPN;

/// Where http-01 tokens are asked for.
pub const HTTP_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// First retry after a failure; each next one waits 5 times longer.
const BACKOFF_FIRST: Duration = Duration::from_secs(2);
/// The longest wait between two attempts (unless the CA asks for more).
const BACKOFF_CAP: Duration = Duration::from_secs(3600);
/// How often the manager looks at storage and the configuration.
const TICK: Duration = Duration::from_secs(1);
/// After a failed renewal-information request, the wait before the next.
const ARI_RETRY: Duration = Duration::from_secs(60);
/// An order that has not finished in this time is abandoned and retried.
const ORDER_TIMEOUT: Duration = Duration::from_secs(180);

/// Challenge answers in flight, shared by the order task, the TLS resolver
/// (tls-alpn-01) and the plain-HTTP listener (http-01). Outlives
/// generations. Answers are also written to `storage`, so that a replica
/// sharing it answers a validation that reaches it instead of the one
/// ordering (a load balancer picks either).
#[derive(Debug, Default)]
pub struct Challenges {
    tls_alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    http: Mutex<HashMap<String, String>>,
    storage: Mutex<Option<Storage>>,
}

impl Challenges {
    /// The acme-tls/1 validation certificate for `name` (normalised), while
    /// its challenge is open here or in storage.
    pub fn tls_alpn_certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        if let Some(key) = self.tls_alpn.lock().ok()?.get(name).cloned() {
            return Some(key);
        }
        let storage = self.storage.lock().ok()?.clone()?;
        let pem = std::fs::read(storage.tls_alpn_challenge(name)).ok()?;
        validation_key_from_pem(&pem).map(Arc::new)
    }

    /// The key authorization to answer `path` with, when it is an open
    /// http-01 challenge's `/.well-known/acme-challenge/<token>`.
    pub fn http_answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP_CHALLENGE_PREFIX)?;
        if !is_token(token) {
            return None;
        }
        if let Some(answer) = self.http.lock().ok()?.get(token).cloned() {
            return Some(answer);
        }
        let storage = self.storage.lock().ok()?.clone()?;
        std::fs::read_to_string(storage.http_challenge(token)).ok()
    }

    /// Where replicas' answers are looked up (the newest `acme.storage`).
    fn use_storage(&self, storage: &Storage) {
        if let Ok(mut s) = self.storage.lock() {
            if s.as_ref() != Some(storage) {
                *s = Some(storage.clone());
            }
        }
    }

    fn open_tls_alpn(&self, storage: &Storage, name: &str, key: Arc<CertifiedKey>, pem: &str) {
        let _ = storage.write_private(&storage.tls_alpn_challenge(name), pem.as_bytes());
        if let Ok(mut m) = self.tls_alpn.lock() {
            m.insert(name.to_string(), key);
        }
    }

    fn open_http(&self, storage: &Storage, token: &str, answer: String) {
        let _ = storage.write_private(&storage.http_challenge(token), answer.as_bytes());
        if let Ok(mut m) = self.http.lock() {
            m.insert(token.to_string(), answer);
        }
    }

    fn close(&self, storage: &Storage, name: &str, token: Option<&str>) {
        let _ = std::fs::remove_file(storage.tls_alpn_challenge(name));
        if let Ok(mut m) = self.tls_alpn.lock() {
            m.remove(name);
        }
        if let Some(token) = token {
            let _ = std::fs::remove_file(storage.http_challenge(token));
            if let Ok(mut m) = self.http.lock() {
                m.remove(token);
            }
        }
    }
}

/// A stored validation certificate and key. Not through
/// `CertifiedKey::from_der`: its key check parses the certificate with
/// webpki, which refuses the critical acmeIdentifier extension.
fn validation_key_from_pem(pem: &[u8]) -> Option<CertifiedKey> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let key = PrivateKeyDer::from_pem_slice(pem).ok()?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).ok()?;
    (!chain.is_empty()).then(|| CertifiedKey::new(chain, signing))
}

/// An ACME token is base64url (RFC 8555 §8.1): safe as a file name.
fn is_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether a ClientHello is a tls-alpn-01 validation: ALPN exactly `acme-tls/1`.
pub fn is_validation_hello<'a>(mut alpn: impl Iterator<Item = &'a [u8]>) -> bool {
    alpn.next() == Some(ACME_TLS_ALPN) && alpn.next().is_none()
}

/// A stored certificate's validity, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// notBefore.
    pub not_before: i64,
    /// notAfter.
    pub not_after: i64,
}

impl Validity {
    /// When renewal is due: `renew_before` ahead of notAfter, else (or when
    /// it is not shorter than the lifetime) at two thirds of the lifetime.
    pub fn renew_at(&self, renew_before: Option<Duration>) -> i64 {
        let lifetime = (self.not_after - self.not_before).max(0);
        let lead = match renew_before.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)) {
            // Not the whole lifetime or more: that would order again and again.
            Some(lead) if lead < lifetime => lead,
            _ => lifetime / 3,
        };
        self.not_after.saturating_sub(lead)
    }
}

/// The validity of the certificate stored for `name`, if it reads.
pub fn stored_validity(storage: &Storage, name: &str) -> Option<Validity> {
    stored_leaf(storage, name).map(|(_, v)| v)
}

/// The leaf certificate stored for `name` (DER) and its validity.
fn stored_leaf(storage: &Storage, name: &str) -> Option<(Vec<u8>, Validity)> {
    let pem = std::fs::read(storage.certificate(name)).ok()?;
    use rustls::pki_types::pem::PemObject;
    let leaf = rustls::pki_types::CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let validity = Validity {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    };
    Some((leaf.as_ref().to_vec(), validity))
}

/// The renewal plan stored for `name`, when it is about this certificate.
fn stored_plan(storage: &Storage, name: &str, der: &[u8]) -> Option<renewal::RenewalPlan> {
    let id = renewal::cert_id(der)?.to_string();
    let text = std::fs::read(storage.renewal_plan(name)).ok()?;
    serde_json::from_slice::<renewal::RenewalPlan>(&text)
        .ok()
        .filter(|p| p.cert_id == id)
}

/// Whether the stored certificate `der` is due for renewal: at the
/// moment drawn in the CA's window when there is one, else by `renew_before`.
fn still_due(storage: &Storage, name: &str, der: &[u8], config: &AcmeConfig) -> bool {
    let Some(v) = stored_validity(storage, name) else {
        return true;
    };
    due(stored_plan(storage, name, der).as_ref(), v, config)
}

/// The renewal rule: the CA's moment when it gave one (with the last tenth
/// of the lifetime as a safety net against a window at or past notAfter),
/// else `renew_before`.
fn due(plan: Option<&renewal::RenewalPlan>, v: Validity, config: &AcmeConfig) -> bool {
    let now = unix_now();
    match plan {
        Some(plan) => now >= plan.renew_at || now >= v.not_after - (v.not_after - v.not_before).max(0) / 10,
        None => now >= v.renew_at(config.renew_before),
    }
}

/// `renew_before` not shorter than the certificate's lifetime would renew
/// at once, again and again: a third of the lifetime is used instead, and
/// said once per certificate.
fn warn_lifetime(name: &str, config: &AcmeConfig, v: Validity, retry: &mut Retry) {
    let Some(before) = config.renew_before else { return };
    let lifetime = (v.not_after - v.not_before).max(0);
    if i64::try_from(before.as_secs()).unwrap_or(i64::MAX) < lifetime || retry.warned_for == Some(v.not_after) {
        return;
    }
    retry.warned_for = Some(v.not_after);
    tracing::warn!(
        "{name}: acme.renew_before = {} is not shorter than the certificate's lifetime ({}); using a third of the lifetime instead ({}): renewal at {}",
        humantime::format_duration(before),
        humantime::format_duration(Duration::from_secs(lifetime as u64)),
        humantime::format_duration(Duration::from_secs((lifetime / 3) as u64)),
        httpdate_of(v.renew_at(config.renew_before)),
    );
}

/// Which account settings an account is for.
fn account_key(config: &AcmeConfig) -> String {
    format!(
        "{}|{:?}|{:?}|{:?}",
        config.directory_url(),
        config.directory_ca,
        config.eab_kid,
        config.storage
    )
}

impl AriSupport {
    /// Whether the CA of `key` was seen offering renewal information.
    fn offered(&self, key: &str) -> bool {
        matches!(&self.known, Some((k, true)) if k == key)
    }

    /// Not offered by the CA of `key` (asked once per account).
    fn absent(&self, key: &str) -> bool {
        matches!(&self.known, Some((k, false)) if k == key)
    }
}

/// Asks the CA for the stored certificate's renewal window (RFC 9773) when
/// the last answer's `Retry-After` has passed, and returns the plan in
/// force; `None` when the CA offers no renewal information (then
/// `renew_before` decides, as without ARI).
async fn check_renewal_info(
    config: &AcmeConfig,
    name: &str,
    der: &[u8],
    storage: &Storage,
    account: &mut Option<AccountInUse>,
    ari: &mut AriSupport,
    retry: &mut Retry,
) -> Option<renewal::RenewalPlan> {
    let key = account_key(config);
    if ari.absent(&key) {
        return None;
    }
    let id = renewal::cert_id(der)?;
    let previous = stored_plan(storage, name, der);
    let now = unix_now();
    let asked_recently = retry.ari_next.is_some_and(|t| Instant::now() < t);
    if previous.as_ref().is_some_and(|p| now < p.next_check) || asked_recently {
        return previous;
    }
    let in_use = match ensure_account(config, name, storage, account).await {
        Ok(in_use) => in_use,
        Err(failure) => {
            tracing::warn!("{} (asking for the renewal window)", failure.line);
            retry.ari_next = Some(Instant::now() + ARI_RETRY);
            return previous;
        }
    };
    match in_use.account.renewal_info(&id).await {
        Ok((info, retry_after)) => {
            ari.known = Some((key, true));
            retry.ari_next = None;
            retry.ari_failures = 0;
            let window = (
                info.suggested_window.start.unix_timestamp(),
                info.suggested_window.end.unix_timestamp(),
            );
            let mut plan = renewal::plan(
                previous.as_ref(),
                &id.to_string(),
                window,
                now,
                retry_after,
                renewal::random_fraction(),
            );
            plan.explanation_url = info.explanation_url;
            if previous.as_ref().is_none_or(|p| p.renew_at != plan.renew_at) {
                tracing::info!(
                    "{name}: the CA suggests renewing between {} and {}{}; renewal at {}",
                    httpdate_of(plan.window_start),
                    httpdate_of(plan.window_end),
                    plan.explanation_url
                        .as_deref()
                        .map(|u| format!(" (why: {u})"))
                        .unwrap_or_default(),
                    httpdate_of(plan.renew_at),
                );
            }
            if let Ok(json) = serde_json::to_vec_pretty(&plan) {
                if let Err(e) = storage.write_private(&storage.renewal_plan(name), &json) {
                    tracing::warn!("{name}: cannot write the renewal plan to acme.storage ({e})");
                }
            }
            Some(plan)
        }
        Err(instant_acme::Error::Unsupported(_)) => {
            ari.known = Some((key, false));
            None
        }
        Err(e) => {
            // 1 min, 5 min, 25 min, ... up to 6 hours: a CA that keeps
            // failing is not asked every minute.
            retry.ari_failures = retry.ari_failures.saturating_add(1);
            let wait = ARI_RETRY
                .saturating_mul(5u32.saturating_pow(retry.ari_failures - 1))
                .min(renewal::MAX_CHECK_INTERVAL);
            tracing::warn!(
                "{name}: the CA's renewal information could not be read ({}); asking again in {}",
                error_chain(&e),
                humantime::format_duration(wait)
            );
            retry.ari_next = Some(Instant::now() + wait);
            previous
        }
    }
}

/// The account for `config`, opened (or registered) when there is none yet
/// or the settings changed.
async fn ensure_account<'a>(
    config: &AcmeConfig,
    name: &str,
    storage: &Storage,
    account: &'a mut Option<AccountInUse>,
) -> Result<&'a AccountInUse, Failure> {
    let key = account_key(config);
    if account.as_ref().is_none_or(|a| a.key != key) {
        *account = Some(open_account(config, name, storage, key).await?);
    }
    account.as_ref().ok_or_else(|| Failure {
        line: format!("{name}: no ACME account"),
        not_before: None,
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// How long to wait after the `failures`-th failure in a row (1-based).
pub fn backoff(failures: u32) -> Duration {
    let factor = 5u32.saturating_pow(failures.saturating_sub(1));
    BACKOFF_FIRST.saturating_mul(factor).min(BACKOFF_CAP)
}

/// Why an attempt failed: the one line to log, and when the CA allows the next.
struct Failure {
    line: String,
    not_before: Option<SystemTime>,
}

/// The account in use, kept while the directory and its settings stay the same.
struct AccountInUse {
    key: String,
    account: Account,
    client: CaClient,
}

/// Per-name retry state.
#[derive(Default)]
struct Retry {
    failures: u32,
    next: Option<Instant>,
    /// After a failed renewal-information request: when to ask again.
    ari_next: Option<Instant>,
    /// Failed renewal-information requests in a row.
    ari_failures: u32,
    /// The notAfter whose `renew_before` warning was given (once per certificate).
    warned_for: Option<i64>,
}

/// Whether the CA offers renewal information (ARI), per account.
#[derive(Default)]
struct AriSupport {
    /// The account key it was learnt for, and the answer.
    known: Option<(String, bool)>,
}

/// What certificate management reads of the running server, and nothing more.
pub trait AcmeHost: Send + Sync + 'static {
    /// The newest generation's `[acme]` table, and whether it has a
    /// plain-HTTP listener (for http-01).
    fn acme_settings(&self) -> (AcmeConfig, bool);
    /// SIGTERM/SIGINT was received: no new orders.
    fn shutting_down(&self) -> bool;
    /// Where orders are counted.
    fn metrics(&self) -> &Metrics;
}

/// Orders and renews the certificates of `[acme] names` until the process
/// ends, following the configuration of the newest generation. A new
/// certificate reaches the handshakes through the storage directory and
/// the reload file watch, so nothing is handed back here.
pub async fn manage(server: Arc<dyn AcmeHost>, challenges: Arc<Challenges>) {
    let mut account: Option<AccountInUse> = None;
    let mut retries: HashMap<String, Retry> = HashMap::new();
    let mut ari = AriSupport::default();
    loop {
        let (config, has_http) = server.acme_settings();
        // A name removed by a reload is forgotten: no more renewals.
        retries.retain(|name, _| config.names.contains(name));
        if server.shutting_down() {
            return;
        }
        let storage = Storage::new(config.storage_dir());
        challenges.use_storage(&storage);
        for name in &config.names {
            let retry = retries.entry(name.clone()).or_default();
            if retry.next.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            let due = match stored_leaf(&storage, name) {
                Some((der, v)) => {
                    warn_lifetime(name, &config, v, retry);
                    let plan = check_renewal_info(&config, name, &der, &storage, &mut account, &mut ari, retry).await;
                    // The CA steers: renew at the moment drawn in its window.
                    due(plan.as_ref(), v, &config)
                }
                None => true,
            };
            if !due {
                retry.failures = 0;
                retry.next = None;
                continue;
            }
            let lock = match storage.try_lock(name) {
                Ok(Some(lock)) => lock,
                // Another replica orders it; its file will appear here.
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(
                        "{name}: cannot use acme.storage {} ({e}); fix its permissions or path",
                        config.storage_dir().display()
                    );
                    retry.next = Some(Instant::now() + backoff(retry.failures.max(1)));
                    continue;
                }
            };
            // Another replica may have finished between our look and the lock.
            let replaced = stored_leaf(&storage, name).map(|(der, _)| der);
            if replaced
                .as_deref()
                .is_some_and(|der| !still_due(&storage, name, der, &config))
            {
                continue;
            }
            let renewing = stored_validity(&storage, name).is_some();
            tracing::info!(
                "{name}: {} a certificate from {}",
                if renewing { "renewing" } else { "ordering" },
                config.directory_url()
            );
            // RFC 9773 §5: a renewal names the certificate it replaces when
            // the CA offers renewal information (Let's Encrypt exempts those
            // from its rate limits).
            // Only for a certificate the CA gave a window for: one it does
            // not know (another CA, staging) would make every order fail.
            let replaces = replaced
                .as_deref()
                .filter(|_| ari.offered(&account_key(&config)))
                .filter(|der| stored_plan(&storage, name, der).is_some())
                .and_then(renewal::cert_id);
            let attempt = tokio::time::timeout(
                ORDER_TIMEOUT,
                attempt(&config, has_http, name, &storage, &challenges, &mut account, replaces),
            );
            tokio::pin!(attempt);
            // The heartbeat tells replicas this process is still at it.
            let mut heartbeat = tokio::time::interval(storage::LOCK_HEARTBEAT);
            let result = loop {
                tokio::select! {
                    done = &mut attempt => break match done {
                        Ok(r) => r,
                        Err(_) => Err(Failure {
                            line: transport_line(name, Step::Order, "no result within 3 minutes", config.directory_url()),
                            not_before: None,
                        }),
                    },
                    _ = heartbeat.tick() => lock.heartbeat(),
                }
            };
            challenges.close(&storage, name, None);
            drop(lock);
            match result {
                Ok(validity) => {
                    server.metrics().count_acme_order("success");
                    retry.failures = 0;
                    retry.next = None;
                    let _ = std::fs::remove_file(storage.last_error(name));
                    tracing::info!(
                        "{name}: certificate obtained, valid until {}; it is served from now on (renewal at {})",
                        httpdate_of(validity.not_after),
                        httpdate_of(validity.renew_at(config.renew_before)),
                    );
                }
                Err(failure) => {
                    server.metrics().count_acme_order("failure");
                    retry.failures = retry.failures.saturating_add(1);
                    let mut wait = backoff(retry.failures);
                    if let Some(t) = failure.not_before {
                        if let Ok(more) = t.duration_since(SystemTime::now()) {
                            wait = wait.max(more);
                        }
                    }
                    retry.next = Some(Instant::now() + wait);
                    let kept = if renewing {
                        "; the current certificate keeps being served"
                    } else {
                        "; TLS handshakes for this name fail until it has one"
                    };
                    let line = format!(
                        "{}{kept}; next attempt in {}",
                        failure.line,
                        humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)))
                    );
                    // Stored before it is logged: whoever reads the log line
                    // (a person, a test) finds the same line in storage.
                    let _ =
                        storage.write_private(&storage.last_error(name), format!("{} {line}\n", unix_now()).as_bytes());
                    tracing::error!("{line}");
                }
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

/// The state of each `[acme]` name as `storage` has it, one line each
/// (with the last failure under it), for `tlsfront doctor`.
pub fn state_lines(config: &AcmeConfig) -> Vec<String> {
    let storage = Storage::new(config.storage_dir());
    let mut out = Vec::new();
    for name in &config.names {
        out.push(match stored_validity(&storage, name) {
            Some(v) => format!(
                "{name}: certificate valid until {}, renewal from {}",
                httpdate_of(v.not_after),
                httpdate_of(v.renew_at(config.renew_before))
            ),
            None => format!("{name}: no certificate yet (handshakes for it fail until one is obtained)"),
        });
        if let Some(plan) = stored_leaf(&storage, name).and_then(|(der, _)| stored_plan(&storage, name, &der)) {
            out.push(format!(
                "  renewal window from the CA (ARI): {} to {}; renewal at {}; next check {}{}",
                httpdate_of(plan.window_start),
                httpdate_of(plan.window_end),
                httpdate_of(plan.renew_at),
                httpdate_of(plan.next_check),
                plan.explanation_url
                    .as_deref()
                    .map(|u| format!(" (why: {u})"))
                    .unwrap_or_default()
            ));
        }
        if let Ok(text) = std::fs::read_to_string(storage.last_error(name)) {
            let (when, line) = text.trim().split_once(' ').unwrap_or(("0", text.trim()));
            let when = when.parse::<i64>().map(httpdate_of).unwrap_or_default();
            out.push(format!("  last failure ({when}): {line}"));
        }
    }
    out
}

fn httpdate_of(unix: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    httpdate::fmt_http_date(t)
}

/// One order for `name`, start to finish.
async fn attempt(
    config: &AcmeConfig,
    has_http: bool,
    name: &str,
    storage: &Storage,
    challenges: &Challenges,
    account: &mut Option<AccountInUse>,
    replaces: Option<instant_acme::CertificateIdentifier<'static>>,
) -> Result<Validity, Failure> {
    let directory = config.directory_url().to_string();
    let AccountInUse { account, client, .. } = ensure_account(config, name, storage, account).await?;
    let problem = |step: Step, e: instant_acme::Error| failure(name, step, e, &directory, client);
    let identifiers = [Identifier::Dns(name.to_string())];
    // Built twice at most (NewOrder is not Clone): with and without `replaces`.
    let base = || {
        let order = NewOrder::new(&identifiers);
        if config.profile.is_empty() {
            order
        } else {
            order.profile(&config.profile)
        }
    };
    if !config.profile.is_empty() {
        let offered: Vec<&str> = account.profiles().map(|p| p.name).collect();
        if !offered.contains(&config.profile.as_str()) {
            return Err(Failure {
                line: format!(
                    "{name}: the CA at {directory} does not offer the ACME profile {:?} (acme.profile); {}",
                    config.profile,
                    if offered.is_empty() {
                        "it offers no profiles: leave acme.profile empty".to_string()
                    } else {
                        format!("it offers: {}", offered.join(", "))
                    }
                ),
                not_before: None,
            });
        }
    }
    let replacing = replaces.is_some();
    let new_order = match replaces {
        Some(id) => base().replaces(id),
        None => base(),
    };
    let mut order = match account.new_order(&new_order).await {
        Ok(order) => order,
        // e.g. `alreadyReplaced` (an order for it finished before, but its
        // certificate never reached storage): the renewal must not fail for
        // ever over a hint; order again without it.
        Err(e) if replacing => {
            tracing::warn!(
                "{name}: the CA refused the order naming the certificate it replaces ({}); ordering without it",
                error_chain(&e)
            );
            account.new_order(&base()).await.map_err(|e| problem(Step::Order, e))?
        }
        Err(e) => return Err(problem(Step::Order, e)),
    };
    let offered = config.usable_challenges(has_http);
    let mut used: Option<ChallengeKind> = None;
    let mut token: Option<String> = None;
    {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| problem(Step::Order, e))?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            let Some(kind) = offered.iter().copied().find(|k| {
                let t = challenge_type(*k);
                authz.challenges.iter().any(|c| c.r#type == t)
            }) else {
                return Err(Failure {
                    line: format!(
                        "{name}: the CA offers none of the configured challenges ({}); set acme.challenges to one it offers{}",
                        offered.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "),
                        if has_http { "" } else { " (http-01 needs listen.http)" }
                    ),
                    not_before: None,
                });
            };
            let Some(mut challenge) = authz.challenge(challenge_type(kind)) else {
                continue;
            };
            let key_auth = challenge.key_authorization();
            match kind {
                ChallengeKind::TlsAlpn01 => {
                    let (cert, pem) =
                        validation_certificate(name, key_auth.digest().as_ref()).map_err(|e| Failure {
                            line: format!("{name}: cannot make the tls-alpn-01 certificate: {e}"),
                            not_before: None,
                        })?;
                    challenges.open_tls_alpn(storage, name, Arc::new(cert), &pem);
                }
                ChallengeKind::Http01 => {
                    if !is_token(&challenge.token) {
                        return Err(Failure {
                            line: format!("{name}: the CA sent an http-01 token that is not base64url; is acme.directory an ACME server?"),
                            not_before: None,
                        });
                    }
                    challenges.open_http(storage, &challenge.token, key_auth.as_str().to_string());
                    token = Some(challenge.token.clone());
                }
            }
            used = Some(kind);
            challenge
                .set_ready()
                .await
                .map_err(|e| problem(Step::Challenge(kind), e))?;
        }
    }
    let step = used.map_or(Step::Order, Step::Challenge);
    let polled = order
        .poll_ready(&RetryPolicy::new().timeout(Duration::from_secs(90)))
        .await;
    let status = match polled {
        Ok(status) => status,
        Err(e) => {
            challenges.close(storage, name, token.as_deref());
            return Err(challenge_failure(name, step, &mut order, &directory, client)
                .await
                .unwrap_or_else(|| problem(step, e)));
        }
    };
    challenges.close(storage, name, token.as_deref());
    if status != OrderStatus::Ready {
        return Err(challenge_failure(name, step, &mut order, &directory, client)
            .await
            .unwrap_or(Failure {
                line: format!("{name}: the order ended {status:?} without a reason from the CA"),
                not_before: None,
            }));
    }
    let key_pair = rcgen::KeyPair::generate().map_err(|e| Failure {
        line: format!("{name}: cannot generate a key: {e}"),
        not_before: None,
    })?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| Failure {
        line: format!("{name}: {e}"),
        not_before: None,
    })?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key_pair).map_err(|e| Failure {
        line: format!("{name}: cannot make the CSR: {e}"),
        not_before: None,
    })?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| problem(Step::Finalize, e))?;
    let chain = order
        .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(90)))
        .await
        .map_err(|e| problem(Step::Finalize, e))?;
    let pem = format!("{}{}", key_pair.serialize_pem(), chain);
    // Checked before it replaces a working certificate.
    let path = storage.certificate(name);
    let tmp_check = crate::tls::certified_key_from_pem(pem.as_bytes()).map_err(|e| Failure {
        line: format!("{name}: the CA's certificate does not load: {e}"),
        not_before: None,
    })?;
    drop(tmp_check);
    storage.write_private(&path, pem.as_bytes()).map_err(|e| Failure {
        line: format!(
            "{name}: cannot write {} ({e}); fix acme.storage's permissions (the certificate is lost and will be ordered again)",
            path.display()
        ),
        not_before: None,
    })?;
    stored_validity(storage, name).ok_or_else(|| Failure {
        line: format!("{name}: {} does not read back", path.display()),
        not_before: None,
    })
}

fn challenge_type(kind: ChallengeKind) -> ChallengeType {
    match kind {
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        ChallengeKind::Http01 => ChallengeType::Http01,
    }
}

/// The CA's reason a challenge failed, from the authorization.
async fn challenge_failure(
    name: &str,
    step: Step,
    order: &mut instant_acme::Order,
    directory: &str,
    client: &CaClient,
) -> Option<Failure> {
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = match authz {
            Ok(a) => a,
            Err(e) => return Some(failure(name, step, e, directory, client)),
        };
        let state = match authz.refresh().await {
            Ok(s) => s,
            Err(e) => return Some(failure(name, step, e, directory, client)),
        };
        if let Some(problem) = state.challenges.iter().find_map(|c| c.error.clone()) {
            return Some(failure(
                name,
                step,
                instant_acme::Error::Api(problem),
                directory,
                client,
            ));
        }
    }
    None
}

fn failure(name: &str, step: Step, e: instant_acme::Error, directory: &str, client: &CaClient) -> Failure {
    let not_before = client.retry_after.lock().ok().and_then(|mut s| s.take());
    let line = match &e {
        instant_acme::Error::Api(p) => {
            let mut line = problem_line(name, step, p);
            if p.r#type.as_deref().is_some_and(|t| t.ends_with(":rateLimited")) {
                line.push_str(&explain::when_it_lifts(not_before));
            }
            line
        }
        other => transport_line(name, step, &error_chain(other), directory),
    };
    Failure { line, not_before }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !s.contains(&more) {
            s.push_str(": ");
            s.push_str(&more);
        }
        source = inner.source();
    }
    s
}

async fn open_account(
    config: &AcmeConfig,
    name: &str,
    storage: &Storage,
    key: String,
) -> Result<AccountInUse, Failure> {
    let directory = config.directory_url().to_string();
    let client = CaClient::new(config.directory_ca.as_deref()).map_err(|e| Failure {
        line: format!("{name}: {e}"),
        not_before: None,
    })?;
    let fail = |e: instant_acme::Error| failure(name, Step::Account, e, &directory, &client);
    let path = storage.account(&directory);
    if let Ok(text) = std::fs::read(&path) {
        match serde_json::from_slice::<AccountCredentials>(&text) {
            Ok(credentials) => {
                let account = Account::builder_with_http(Box::new(client.clone()))
                    .from_credentials(credentials)
                    .await
                    .map_err(fail)?;
                return Ok(AccountInUse { key, account, client });
            }
            Err(e) => tracing::warn!(
                "{}: unreadable ACME account ({e}); registering a new one",
                path.display()
            ),
        }
    }
    let contact = config.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let eab = match (&config.eab_kid, &config.eab_hmac_key) {
        (Some(kid), Some(hmac)) => decode_hmac_key(hmac).map(|k| ExternalAccountKey::new(kid.clone(), &k)),
        _ => None,
    };
    let (account, credentials) = Account::builder_with_http(Box::new(client.clone()))
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.clone(),
            eab.as_ref(),
        )
        .await
        .map_err(fail)?;
    let json = serde_json::to_vec_pretty(&credentials).map_err(|e| Failure {
        line: format!("{name}: cannot store the account: {e}"),
        not_before: None,
    })?;
    storage.write_private(&path, &json).map_err(|e| Failure {
        line: format!(
            "{name}: cannot write {} ({e}); fix acme.storage's permissions",
            path.display()
        ),
        not_before: None,
    })?;
    tracing::info!(
        "registered an ACME account with {directory} (stored in {})",
        path.display()
    );
    Ok(AccountInUse { key, account, client })
}

/// The self-signed certificate a tls-alpn-01 validation is answered with:
/// the name, and the acmeIdentifier extension holding the SHA-256 of the
/// key authorization (RFC 8737 §3).
fn validation_certificate(name: &str, digest: &[u8]) -> Result<(CertifiedKey, String), String> {
    if digest.len() != 32 {
        return Err("the key authorization digest is not SHA-256".into());
    }
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| e.to_string())?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key_der).map_err(|e| e.to_string())?;
    let pem = format!("{}{}", key.serialize_pem(), cert.pem());
    Ok((CertifiedKey::new(vec![cert.der().clone()], signing), pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_a_third_of_the_lifetime_unless_configured() {
        let v = Validity {
            not_before: 0,
            not_after: 90 * 86400,
        };
        assert_eq!(v.renew_at(None), 60 * 86400);
        assert_eq!(v.renew_at(Some(Duration::from_secs(10 * 86400))), 80 * 86400);
        // Longer than the lifetime would order again and again: a third.
        assert_eq!(v.renew_at(Some(Duration::from_secs(90 * 86400))), 60 * 86400);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(50));
        assert_eq!(backoff(30), BACKOFF_CAP);
    }

    #[test]
    fn validation_hello_is_exactly_acme_tls() {
        assert!(is_validation_hello([b"acme-tls/1".as_slice()].into_iter()));
        assert!(!is_validation_hello(
            [b"h2".as_slice(), b"acme-tls/1".as_slice()].into_iter()
        ));
        assert!(!is_validation_hello(
            [b"acme-tls/1".as_slice(), b"h2".as_slice()].into_iter()
        ));
        assert!(!is_validation_hello(std::iter::empty()));
    }

    #[test]
    fn hmac_keys_decode_padded_or_not() {
        assert_eq!(decode_hmac_key("AQID"), Some(vec![1, 2, 3]));
        assert_eq!(decode_hmac_key("AQI="), Some(vec![1, 2]));
        assert_eq!(decode_hmac_key("not base64!"), None);
        assert_eq!(decode_hmac_key(""), None);
    }

    #[test]
    fn tls_alpn_answers_are_shared_through_storage() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::new(dir.path().to_path_buf());
        let (key, pem) = validation_certificate("a.test", &[7u8; 32]).unwrap();
        let c = Challenges::default();
        c.open_tls_alpn(&storage, "a.test", Arc::new(key), &pem);
        assert!(c.tls_alpn_certificate("a.test").is_some());
        let replica = Challenges::default();
        replica.use_storage(&storage);
        let shared = replica.tls_alpn_certificate("a.test").expect("read from storage");
        assert_eq!(shared.cert, c.tls_alpn_certificate("a.test").unwrap().cert);
        assert!(replica.tls_alpn_certificate("b.test").is_none());
        c.close(&storage, "a.test", None);
        assert!(replica.tls_alpn_certificate("a.test").is_none());
    }

    #[test]
    fn http_answers_only_open_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::new(dir.path().to_path_buf());
        let c = Challenges::default();
        c.open_http(&storage, "tok", "tok.thumb".into());
        assert_eq!(
            c.http_answer("/.well-known/acme-challenge/tok").as_deref(),
            Some("tok.thumb")
        );
        assert_eq!(c.http_answer("/.well-known/acme-challenge/other"), None);
        assert_eq!(c.http_answer("/tok"), None);
        assert_eq!(c.http_answer("/.well-known/acme-challenge/../../etc/passwd"), None);
        // A replica sharing storage answers it too.
        let replica = Challenges::default();
        assert_eq!(replica.http_answer("/.well-known/acme-challenge/tok"), None);
        replica.use_storage(&storage);
        assert_eq!(
            replica.http_answer("/.well-known/acme-challenge/tok").as_deref(),
            Some("tok.thumb")
        );
        c.close(&storage, "a.test", Some("tok"));
        assert_eq!(c.http_answer("/.well-known/acme-challenge/tok"), None);
        assert_eq!(replica.http_answer("/.well-known/acme-challenge/tok"), None);
    }
}
