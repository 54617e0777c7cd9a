//! `[log]` and `[limits]`: what tlsfront writes, and the limits and
//! timeouts that keep one client from holding the server.

use std::time::Duration;

use serde::Deserialize;

use super::values::duration;

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Normal operation.
    Info,
    /// Troubleshooting.
    Debug,
    /// Everything.
    Trace,
}

/// Access log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// Common Log Format plus host, timings, protocol and TLS version.
    Common,
    /// No access log.
    Off,
}

/// Application log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// Application log level.
    pub level: LogLevel,
    /// Access log (stdout).
    pub access: AccessLogFormat,
    /// Application log format (stderr).
    pub format: LogFormat,
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request head (request line + headers) accepted; past it, 431.
    pub max_request_header_bytes: usize,
    /// Largest request body accepted; past it, 413. 0 = unlimited.
    pub max_request_body_bytes: u64,
    /// A keep-alive connection with no traffic for this long is closed.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Client connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// HTTP/2 streams per connection at once.
    pub max_concurrent_streams: u32,
    /// HTTP/2 streams a client may reset before they are processed, before
    /// the connection is closed (rapid-reset protection).
    pub max_pending_reset_streams: usize,
    /// Time a client has to complete the TLS handshake.
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// Time a client has to send a complete request head (slowloris).
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// A client that takes none of the bytes waiting for it (a response it
    /// stopped reading) for this long is dropped (nginx's `send_timeout`).
    #[serde(deserialize_with = "duration")]
    pub send_timeout: Duration,
    /// Grace period for in-flight requests on SIGTERM / SIGINT.
    #[serde(deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
    /// After SIGTERM/SIGINT, how long tlsfront keeps accepting and serving
    /// while `/readyz` and `/healthz` answer 503 (a load balancer's time to
    /// notice), before it stops accepting and drains.
    #[serde(deserialize_with = "duration")]
    pub shutdown_delay: Duration,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: LogLevel::Info,
            access: AccessLogFormat::Common,
            format: LogFormat::Text,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_header_bytes: 64 * 1024,
            max_request_body_bytes: 0,
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_concurrent_streams: 100,
            max_pending_reset_streams: 20,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
        }
    }
}
