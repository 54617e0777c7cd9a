//! Live reload: on SIGHUP, and when the certificate or key file changes on
//! disk, the configuration and certificates are loaded again and swapped in
//! for new connections and requests. A bad new version is rejected and the
//! old one keeps serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::server::{Loader, Server};

/// How often certificate files are checked. Polling (not inotify) also sees
/// the symlink swaps that Kubernetes secrets and certbot's `live/` use.
const POLL: Duration = Duration::from_secs(1);

/// Lets a writer finish replacing both files before they are read.
const SETTLE: Duration = Duration::from_millis(300);

/// SIGHUP, listened for from the moment this is made: made before the
/// listeners are announced, so that a SIGHUP sent as soon as tlsfront says
/// "listening on" reloads instead of meeting the default action (exit).
pub struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    /// Starts listening for SIGHUP (a warning when that is impossible).
    pub fn listen() -> Self {
        #[cfg(unix)]
        {
            let signal = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("cannot listen for SIGHUP, reload on signal is off: {e}");
                    None
                }
            };
            Hangup { signal }
        }
        #[cfg(not(unix))]
        Hangup {}
    }

    /// The next SIGHUP; never, when it cannot be listened for.
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = self.signal.as_mut() {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}

/// Watches for SIGHUP and certificate changes until the process ends.
pub async fn watch(server: Arc<Server>, loader: Loader, mut hangup: Hangup) {
    let mut seen = fingerprint(&server.current().watch);
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                server.reload(&loader, "SIGHUP");
                seen = fingerprint(&server.current().watch);
            }
            _ = tick.tick() => {
                let now = fingerprint(&server.current().watch);
                if now != seen {
                    tokio::time::sleep(SETTLE).await;
                    server.reload(&loader, "certificate or key file changed");
                    // Success or not, wait for the next change before trying again.
                    seen = fingerprint(&server.current().watch);
                }
            }
        }
    }
}

type Fingerprint = Vec<Option<(SystemTime, u64, u64)>>;

/// Modification time, size and inode of each file (following symlinks).
fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
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
