//! `acme.storage`: the account, one PEM file per name (key and chain, so a
//! reader never sees a new certificate with an old key), the last error of
//! each name, and the order locks replicas share. Directories 0700, files
//! 0600, every write a rename.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A lock whose heartbeat is older than this is taken over: its holder died.
pub const LOCK_STALE_AFTER: Duration = Duration::from_secs(60);
/// How often a holder refreshes its lock.
pub const LOCK_HEARTBEAT: Duration = Duration::from_secs(10);

/// The storage directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    dir: PathBuf,
}

impl Storage {
    /// `dir` is `acme.storage`.
    pub fn new(dir: PathBuf) -> Storage {
        Storage { dir }
    }

    /// The certificate and key of `name`: one PEM file, the key first.
    pub fn certificate(&self, name: &str) -> PathBuf {
        self.dir.join("certificates").join(format!("{name}.pem"))
    }

    /// The renewal plan of `name` from the CA's renewal information (ARI),
    /// for `doctor` and replicas.
    pub fn renewal_plan(&self, name: &str) -> PathBuf {
        self.dir.join("status").join(format!("{name}.ari.json"))
    }

    /// The last failure of `name`, one line, for `doctor` and people.
    pub fn last_error(&self, name: &str) -> PathBuf {
        self.dir.join("status").join(format!("{name}.error"))
    }

    /// The account for `directory` (one per CA, so switching from staging
    /// to production needs no cleanup).
    pub fn account(&self, directory: &str) -> PathBuf {
        let safe: String = directory
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join("accounts").join(format!("{safe}.json"))
    }

    /// An open tls-alpn-01 answer for `name` (validation key and certificate).
    pub fn tls_alpn_challenge(&self, name: &str) -> PathBuf {
        self.dir.join("challenges").join(format!("{name}.tls-alpn.pem"))
    }

    /// An open http-01 answer for `token` (checked to be base64url).
    pub fn http_challenge(&self, token: &str) -> PathBuf {
        self.dir.join("challenges").join(format!("{token}.http"))
    }

    fn lock(&self, name: &str) -> PathBuf {
        self.dir.join("locks").join(format!("{name}.lock"))
    }

    /// Writes `bytes` to `path` (under this storage) with mode 0600, through
    /// a temporary file and a rename; creates the directories with 0700.
    pub fn write_private(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let parent = path.parent().unwrap_or(&self.dir);
        create_private_dir(&self.dir)?;
        create_private_dir(parent)?;
        // Unique across processes sharing the storage: the pid alone is not
        // (every container's tlsfront is pid 1), so the time and a counter
        // are in the name too.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tmp = parent.join(format!(
            ".{}.{}.{nanos}.{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
            std::process::id(),
            WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        {
            let mut f = private_file(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    }

    /// Takes the order lock of `name`, unless another live process holds
    /// it (its heartbeat is fresher than [`LOCK_STALE_AFTER`]).
    pub fn try_lock(&self, name: &str) -> std::io::Result<Option<OrderLock>> {
        let path = self.lock(name);
        create_private_dir(&self.dir)?;
        create_private_dir(path.parent().unwrap_or(&self.dir))?;
        for _ in 0..2 {
            match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    set_mode(&path, 0o600);
                    return Ok(Some(OrderLock { path }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok());
                    match age {
                        Some(age) if age > LOCK_STALE_AFTER => {
                            tracing::warn!(
                                "taking over the stale ACME order lock {} (no heartbeat for {}s)",
                                path.display(),
                                age.as_secs()
                            );
                            let _ = fs::remove_file(&path);
                        }
                        _ => return Ok(None),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// Held while this process orders a name; removed on drop.
#[derive(Debug)]
pub struct OrderLock {
    path: PathBuf,
}

impl OrderLock {
    /// Refreshes the heartbeat (the file's modification time).
    pub fn heartbeat(&self) {
        if let Ok(f) = fs::OpenOptions::new().write(true).open(&self.path) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Where the lock is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OrderLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
    }
    #[cfg(not(unix))]
    fs::create_dir_all(dir)
}

fn private_file(path: &Path) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let f = options.open(path)?;
    set_mode(path, 0o600);
    Ok(f)
}

fn set_mode(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_private_and_locks_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::new(dir.path().join("acme"));
        let cert = storage.certificate("a.test");
        storage.write_private(&cert, b"pem").unwrap();
        assert_eq!(fs::read(&cert).unwrap(), b"pem");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&cert), 0o600);
            assert_eq!(mode(&dir.path().join("acme")), 0o700);
            assert_eq!(mode(cert.parent().unwrap()), 0o700);
        }
        let held = storage.try_lock("a.test").unwrap().expect("free lock is taken");
        assert!(
            storage.try_lock("a.test").unwrap().is_none(),
            "a live lock is respected"
        );
        // A lock without heartbeat for longer than the bound is taken over.
        let old = SystemTime::now() - LOCK_STALE_AFTER - Duration::from_secs(5);
        fs::OpenOptions::new()
            .write(true)
            .open(held.path())
            .unwrap()
            .set_modified(old)
            .unwrap();
        let path = held.path().to_path_buf();
        std::mem::forget(held);
        let taken = storage.try_lock("a.test").unwrap().expect("stale lock is taken over");
        drop(taken);
        assert!(!path.exists(), "the lock is removed when released");
        assert!(storage
            .account("https://127.0.0.1:14000/dir")
            .ends_with("accounts/127.0.0.1_14000_dir.json"));
    }
}
