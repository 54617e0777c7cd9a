//! `[auth] basic`: users of an htpasswd file, read again when it changes.
//!
//! A bcrypt or argon2 check costs milliseconds of CPU by design, so checks
//! run on the blocking pool, at most one per core at a time, and a
//! successful one is remembered for five minutes (until the file changes)
//! so that a logged-in browser's every request does not pay it again. It is
//! remembered by a 128-bit keyed hash (SipHash, keys drawn at start) of the
//! `Authorization` header, never the password itself: a hit costs a few
//! hundred instructions, and forging one would need a collision under keys
//! the attacker never sees. An unknown user is checked against a real hash
//! all the same, so the time taken does not tell which users exist.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use base64::Engine;
use http::HeaderValue;
use tokio::sync::Semaphore;

use crate::htpasswd::{self, PasswordHash};

/// How often the file is looked at for changes (at most; only on requests).
const RECHECK_MS: u64 = 1000;
/// How long a successful check is remembered.
const REMEMBER: Duration = Duration::from_secs(300);
/// Successful checks remembered at most.
const REMEMBERED: usize = 10_000;

struct Users {
    by_name: HashMap<String, PasswordHash>,
    /// The file's modification time and length when read.
    stamp: Option<(SystemTime, u64)>,
}

/// One htpasswd file's users.
pub struct BasicAuth {
    path: PathBuf,
    users: ArcSwap<Users>,
    checked_at: AtomicU64,
    epoch: Instant,
    /// Fingerprint of a verified `Authorization` header -> its user, and when.
    remembered: Mutex<HashMap<u128, (String, Instant)>>,
    fingerprint_keys: (
        std::collections::hash_map::RandomState,
        std::collections::hash_map::RandomState,
    ),
    checks: Semaphore,
}

impl BasicAuth {
    /// Reads the file (checked already by `tlsfront check`); an unreadable
    /// file now leaves no users, so nobody gets in (fail closed).
    pub fn new(path: &Path) -> BasicAuth {
        let users = match read(path) {
            Ok(users) => users,
            Err(e) => {
                tracing::error!("auth.basic: {e}; every request is refused until it is fixed");
                Users {
                    by_name: HashMap::new(),
                    stamp: None,
                }
            }
        };
        BasicAuth {
            path: path.to_path_buf(),
            users: ArcSwap::from_pointee(users),
            checked_at: AtomicU64::new(0),
            epoch: Instant::now(),
            remembered: Mutex::new(HashMap::new()),
            fingerprint_keys: Default::default(),
            checks: Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
        }
    }

    /// The user an `Authorization: Basic` header proves, if it does.
    pub async fn user(self: &Arc<Self>, authorization: Option<&HeaderValue>) -> Option<String> {
        let authorization = authorization?;
        self.reload_if_changed().await;
        let fingerprint = self.fingerprint(authorization.as_bytes());
        if let Some(user) = self.remembered(fingerprint) {
            return Some(user);
        }
        let (user, password) = credentials(authorization)?;
        let users = self.users.load_full();
        let Some(hash) = users.by_name.get(&user).cloned() else {
            // Spend the same time as for a real user, then refuse.
            let any = users.by_name.values().next()?.clone();
            let _ = self.verify(password, any).await;
            return None;
        };
        if !self.verify(password, hash).await {
            return None;
        }
        let mut remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        if remembered.len() >= REMEMBERED {
            remembered.clear();
        }
        remembered.insert(fingerprint, (user.clone(), Instant::now()));
        Some(user)
    }

    fn fingerprint(&self, authorization: &[u8]) -> u128 {
        use std::hash::BuildHasher;
        let (a, b) = &self.fingerprint_keys;
        (u128::from(a.hash_one(authorization)) << 64) | u128::from(b.hash_one(authorization))
    }

    fn remembered(&self, fingerprint: u128) -> Option<String> {
        let remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        let (user, at) = remembered.get(&fingerprint)?;
        (at.elapsed() < REMEMBER).then(|| user.clone())
    }

    async fn verify(&self, password: Vec<u8>, hash: PasswordHash) -> bool {
        let Ok(_turn) = self.checks.acquire().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || match &hash {
            PasswordHash::Bcrypt(h) => bcrypt::verify(&password, h).unwrap_or(false),
            PasswordHash::Argon2(h) => {
                use argon2::password_hash::PasswordVerifier;
                argon2::password_hash::PasswordHash::new(h)
                    .is_ok_and(|parsed| argon2::Argon2::default().verify_password(&password, &parsed).is_ok())
            }
        })
        .await
        .unwrap_or(false)
    }

    /// Reads the file again when its time or length changed; a file made
    /// bad keeps the users it had (and says so), as certificates do.
    async fn reload_if_changed(self: &Arc<Self>) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.checked_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) < RECHECK_MS
            || self
                .checked_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let stamp = stamp(&this.path);
            if stamp.is_none() || stamp == this.users.load().stamp {
                return;
            }
            match read(&this.path) {
                Ok(users) => {
                    tracing::info!(
                        "auth.basic: {} read again ({} users)",
                        this.path.display(),
                        users.by_name.len()
                    );
                    this.users.store(Arc::new(users));
                    this.remembered.lock().unwrap_or_else(|p| p.into_inner()).clear();
                }
                Err(e) => tracing::error!("auth.basic: {e}; keeping the users read before"),
            }
        })
        .await;
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read(path: &Path) -> Result<Users, String> {
    let stamp = stamp(path);
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let entries = htpasswd::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Users {
        by_name: entries.into_iter().map(|e| (e.user, e.hash)).collect(),
        stamp,
    })
}

/// User and password of an `Authorization: Basic` header (RFC 7617).
pub fn credentials(value: &HeaderValue) -> Option<(String, Vec<u8>)> {
    let text = value.to_str().ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(token.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> HeaderValue {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {token}")).unwrap()
    }

    #[tokio::test]
    async fn bcrypt_and_argon2_users_and_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("htpasswd");
        let alice = bcrypt::hash("wonder land", 4).unwrap();
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let bob = argon2::Argon2::default()
            .hash_password(b"builder", &salt)
            .unwrap()
            .to_string();
        std::fs::write(&file, format!("alice:{alice}\nbob:{bob}\n")).unwrap();
        let auth = Arc::new(BasicAuth::new(&file));
        assert_eq!(
            auth.user(Some(&header("alice", "wonder land"))).await.as_deref(),
            Some("alice")
        );
        assert_eq!(
            auth.user(Some(&header("alice", "wonder land"))).await.as_deref(),
            Some("alice")
        );
        assert_eq!(auth.user(Some(&header("alice", "wonderland"))).await, None);
        assert_eq!(auth.user(Some(&header("bob", "builder"))).await.as_deref(), Some("bob"));
        assert_eq!(auth.user(Some(&header("mallory", "builder"))).await, None);
        assert_eq!(auth.user(None).await, None);
        assert_eq!(auth.user(Some(&HeaderValue::from_static("Bearer abc"))).await, None);
        // Carol is added: read on a later request, no restart.
        let carol = bcrypt::hash("pw:with:colons", 4).unwrap();
        std::fs::write(&file, format!("alice:{alice}\nbob:{bob}\ncarol:{carol}\n")).unwrap();
        auth.checked_at.store(0, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            auth.user(Some(&header("carol", "pw:with:colons"))).await.as_deref(),
            Some("carol")
        );
        // A broken file keeps the users read before.
        std::fs::write(&file, "carol:plaintext\n").unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            auth.user(Some(&header("carol", "pw:with:colons"))).await.as_deref(),
            Some("carol")
        );
    }

    #[test]
    fn credentials_are_parsed_as_rfc_7617_says() {
        assert_eq!(credentials(&header("a", "b:c")), Some(("a".into(), b"b:c".to_vec())));
        assert_eq!(
            credentials(&HeaderValue::from_static("basic YTpi")),
            Some(("a".into(), b"b".to_vec()))
        );
        assert_eq!(credentials(&HeaderValue::from_static("Basic !!!")), None);
        assert_eq!(credentials(&HeaderValue::from_static("Basic YWI=")), None);
    }
}
