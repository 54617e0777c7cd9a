//! The access log: one line per request on stdout, written by a dedicated
//! thread so that a slow terminal or pipe never blocks request handling.

use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Version};

use crate::config::AccessLogFormat;

/// What one line says about one request.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// When the request head arrived.
    pub time: SystemTime,
    /// The client as far as the trusted chain lets us know it.
    pub client_ip: IpAddr,
    /// Method.
    pub method: Method,
    /// Host the client asked for (empty when it gave none).
    pub host: Option<HeaderValue>,
    /// Path and query.
    pub path: String,
    /// Status sent.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    /// Time until the upstream's response head; `None` when it was not asked.
    pub upstream_time: Option<Duration>,
    /// Time until the response body ended.
    pub total_time: Duration,
    /// HTTP version spoken with the client.
    pub protocol: Version,
    /// TLS version spoken with the client.
    pub tls_version: &'static str,
    /// Negotiated key exchange group.
    pub key_exchange: &'static str,
    /// The user `[auth] basic` let in, if any.
    pub user: Option<String>,
}

impl AccessRecord {
    /// `ip - - [time] "METHOD path PROTO" status bytes host="…" upstream_ms=… total_ms=… tls=… kx=…`
    pub fn common(&self) -> String {
        let t = time::OffsetDateTime::from(self.time);
        let host = self.host.as_ref().map(|h| escape(h.as_bytes())).unwrap_or_default();
        let upstream = self
            .upstream_time
            .map(|d| format!("{:.3}", d.as_secs_f64() * 1000.0))
            .unwrap_or_else(|| "-".into());
        format!(
            "{} - {} [{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000] \"{} {} {:?}\" {} {} host=\"{}\" upstream_ms={} total_ms={:.3} tls={} kx={}",
            self.client_ip,
            self.user.as_deref().map_or_else(|| "-".to_string(), |u| escape(u.replace(' ', "_").as_bytes())),
            t.day(),
            MONTHS[t.month() as usize - 1],
            t.year(),
            t.hour(),
            t.minute(),
            t.second(),
            self.method,
            escape(self.path.as_bytes()),
            self.protocol,
            self.status,
            self.bytes,
            host,
            upstream,
            self.total_time.as_secs_f64() * 1000.0,
            self.tls_version,
            self.key_exchange,
        )
    }

    /// One JSON object.
    pub fn json(&self) -> String {
        let t = time::OffsetDateTime::from(self.time);
        let time = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        );
        serde_json::json!({
            "time": time,
            "client_ip": self.client_ip.to_string(),
            "method": self.method.as_str(),
            "host": self.host.as_ref().map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()),
            "path": self.path,
            "status": self.status,
            "bytes": self.bytes,
            "upstream_ms": self.upstream_time.map(|d| d.as_secs_f64() * 1000.0),
            "total_ms": self.total_time.as_secs_f64() * 1000.0,
            "protocol": format!("{:?}", self.protocol),
            "tls": self.tls_version,
            "kx": self.key_exchange,
            "user": self.user,
        })
        .to_string()
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Quotes and non-printable bytes escaped so a line stays one parseable line.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// Lines waiting for the writer thread; past this, lines are dropped and counted.
const QUEUE: usize = 64 * 1024;

/// The access-log sink.
pub struct AccessLog {
    format: AccessLogFormat,
    tx: Option<SyncSender<String>>,
    dropped: AtomicU64,
}

impl AccessLog {
    /// Starts the writer thread (none when the log is off).
    pub fn new(format: AccessLogFormat) -> Self {
        let tx = (format != AccessLogFormat::Off).then(|| {
            let (tx, rx) = sync_channel(QUEUE);
            let spawned = std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || write_lines(rx));
            if let Err(e) = spawned {
                tracing::error!("cannot start the access log writer: {e}");
            }
            tx
        });
        AccessLog {
            format,
            tx,
            dropped: AtomicU64::new(0),
        }
    }

    /// Whether lines are written at all.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues one line; never blocks.
    pub fn log(&self, record: &AccessRecord) {
        let Some(tx) = &self.tx else { return };
        let line = match self.format {
            AccessLogFormat::Json => record.json(),
            AccessLogFormat::Common => record.common(),
            AccessLogFormat::Off => return,
        };
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    tracing::warn!("access log cannot keep up with stdout: {} lines dropped so far", n + 1);
                }
            }
        }
    }
}

fn write_lines(rx: Receiver<String>) {
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(line.as_bytes());
        let _ = out.write_all(b"\n");
        // Batch what is already queued, then flush so lines appear promptly.
        while let Ok(line) = rx.try_recv() {
            let _ = out.write_all(line.as_bytes());
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord {
        AccessRecord {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
            client_ip: "2001:db8::1".parse().unwrap(),
            method: Method::POST,
            host: Some(HeaderValue::from_static("app.example:8443")),
            path: "/login?next=%2F".into(),
            status: 302,
            bytes: 199,
            upstream_time: Some(Duration::from_micros(1500)),
            total_time: Duration::from_micros(2250),
            protocol: Version::HTTP_2,
            tls_version: "TLSv1.3",
            key_exchange: "X25519MLKEM768",
            user: None,
        }
    }

    #[test]
    fn common_line() {
        assert_eq!(
            record().common(),
            "2001:db8::1 - - [18/Nov/2026:11:06:40 +0000] \"POST /login?next=%2F HTTP/2.0\" 302 199 host=\"app.example:8443\" upstream_ms=1.500 total_ms=2.250 tls=TLSv1.3 kx=X25519MLKEM768"
        );
    }

    #[test]
    fn json_line_is_valid_json() {
        let mut r = record();
        r.host = Some(HeaderValue::from_bytes(b"we\"ird\\host").unwrap());
        r.upstream_time = None;
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["time"], "2026-11-18T11:06:40.123Z");
        assert_eq!(v["client_ip"], "2001:db8::1");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["host"], "we\"ird\\host");
        assert_eq!(v["status"], 302);
        assert_eq!(v["bytes"], 199);
        assert!(v["upstream_ms"].is_null());
        assert_eq!(v["protocol"], "HTTP/2.0");
        assert_eq!(v["tls"], "TLSv1.3");
    }

    #[test]
    fn escaping_keeps_one_line() {
        assert_eq!(escape(b"a\"b\nc\\"), "a\\\"b\\x0ac\\\\");
    }
}
