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

/// SIGHUP, listened for before the listeners are announced: until then
/// the default action applies, and a HUP sent as soon as tlsfront says it
/// is listening would end the process instead of reloading it.
#[cfg(unix)]
pub struct Hangup(Option<tokio::signal::unix::Signal>);

/// SIGHUP does not exist here.
#[cfg(not(unix))]
pub struct Hangup;

/// Starts listening for SIGHUP (inside the runtime).
pub fn listen_for_hangup() -> Hangup {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Hangup(Some(s)),
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP, reload on signal is off: {e}");
                Hangup(None)
            }
        }
    }
    #[cfg(not(unix))]
    Hangup
}

/// Watches for SIGHUP and certificate changes until the process ends.
pub async fn watch(server: Arc<Server>, loader: Loader, hangup: Hangup) {
    #[cfg(unix)]
    let mut hangup = hangup.0;
    #[cfg(not(unix))]
    let _ = hangup;
    let mut seen = fingerprint(&server.current().watch);
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
