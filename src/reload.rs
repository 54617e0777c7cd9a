//! Live reload: on SIGHUP, and when the certificate or key file changes on
//! disk, the configuration and certificates are loaded again and swapped in
//! for new connections and requests. A bad new version is rejected and the
//! old one keeps serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What live reload does to the running server, and nothing more.
pub trait Reload: Send + Sync + 'static {
    /// The files the newest generation was read from (certificates, keys).
    fn watched(&self) -> Vec<PathBuf>;
    /// Loads configuration and certificates again and swaps them in; on
    /// failure the old ones keep serving (and the failure is logged).
    fn reload(&self, why: &str);
}

/// How often certificate files are checked. Polling (not inotify) also sees
/// the symlink swaps that Kubernetes secrets and certbot's `live/` use.
const POLL: Duration = Duration::from_secs(1);

/// Lets a writer finish replacing both files before they are read.
const SETTLE: Duration = Duration::from_millis(300);

/// Watches for SIGHUP and certificate changes until the process ends.
/// `seen` is how the watched files were just before the running
/// configuration read them. The SIGHUP handler is registered when this is
/// called, not when the future is first polled, so a SIGHUP right after
/// start reloads instead of ending the process.
pub fn watch(server: Arc<dyn Reload>, seen: Fingerprint) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP, reload on signal is off: {e}");
            None
        }
    };
    watch_with(
        server,
        seen,
        #[cfg(unix)]
        hangup,
    )
}

async fn watch_with(
    server: Arc<dyn Reload>,
    mut seen: Fingerprint,
    #[cfg(unix)] mut hangup: Option<tokio::signal::unix::Signal>,
) {
    let mut tick = tokio::time::interval(POLL);
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hangup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = signalled => {
                seen = reload(&*server, "SIGHUP");
            }
            _ = tick.tick() => {
                let now = fingerprint(&server.watched());
                if now != seen {
                    tokio::time::sleep(SETTLE).await;
                    // Success or not, wait for the next change before trying again.
                    seen = reload(&*server, "certificate or key file changed");
                }
            }
        }
    }
}

/// Reloads, and returns the watched files' fingerprint taken before they
/// were read, so that a change made while they were read is still seen as a
/// change (unless the reload changed which files are watched).
fn reload(server: &dyn Reload, why: &str) -> Fingerprint {
    let paths = server.watched();
    let before = fingerprint(&paths);
    server.reload(why);
    let now = server.watched();
    if now == paths {
        before
    } else {
        fingerprint(&now)
    }
}

/// Modification time, size and inode of each watched file (None: unreadable).
pub type Fingerprint = Vec<Option<(SystemTime, u64, u64)>>;

/// Modification time, size and inode of each file (following symlinks).
pub fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    paths
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p).ok()?;
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&meta);
            #[cfg(not(unix))]
            let inode = 0;
            Some((meta.modified().ok()?, meta.len(), inode))
        })
        .collect()
}
