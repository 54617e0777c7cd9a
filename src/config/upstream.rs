//! `[upstream]`: the app behind tlsfront, and the timeouts and pool every
//! route starts from.

use std::time::Duration;

use serde::Deserialize;

use super::servers::{upstream_url, UpstreamUrl};
use super::values::duration;

/// `[upstream]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    /// `http://host:port` of the app.
    #[serde(deserialize_with = "upstream_url")]
    pub url: UpstreamUrl,
    /// Limit on establishing a TCP connection to the app.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Limit until the app's response headers arrive.
    #[serde(deserialize_with = "duration")]
    pub response_timeout: Duration,
    /// Longest silence of the app in the middle of a response body.
    #[serde(deserialize_with = "duration")]
    pub read_timeout: Duration,
    /// How long an idle pooled connection to the app is kept.
    #[serde(deserialize_with = "duration")]
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept to the app.
    pub pool_max_idle: usize,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            url: UpstreamUrl::parse("http://127.0.0.1:8000").expect("the default upstream is valid"),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(60),
            pool_max_idle: 64,
        }
    }
}
