//! The header policy tables: `[forwarded]` (whom to believe, what to
//! tell the app), `[cookies]` (Set-Cookie hardening), `[redirects]` and
//! `[headers]` (fixed headers, HSTS). `[[route]]` overrides them per route.

use http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;
use serde::Deserialize;

use super::values::{cidr_list, header_names, header_table, optional_header_value};

/// `[forwarded]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Forwarded {
    /// Peers whose forwarded headers are believed and extended.
    #[serde(deserialize_with = "cidr_list")]
    pub trusted_proxies: Vec<IpNet>,
    /// Send X-Forwarded-For.
    pub x_forwarded_for: bool,
    /// Send X-Forwarded-Proto.
    pub x_forwarded_proto: bool,
    /// Send X-Forwarded-Host.
    pub x_forwarded_host: bool,
    /// Send X-Forwarded-Port.
    pub x_forwarded_port: bool,
    /// Send X-Real-IP.
    pub x_real_ip: bool,
    /// Send RFC 7239 Forwarded.
    pub forwarded: bool,
    /// Extra header names removed from untrusted peers, beyond every
    /// `X-Forwarded-*` and the built-in client-identity list.
    #[serde(deserialize_with = "header_names")]
    pub strip_untrusted: Vec<HeaderName>,
}

/// `SameSite` policy for cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    /// Leave whatever the app sent.
    Keep,
    /// Add `SameSite=Lax` when absent.
    Lax,
    /// Add `SameSite=Strict` when absent.
    Strict,
    /// Add `SameSite=None` (and so `Secure`) when absent.
    None,
}

/// `[cookies]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cookies {
    /// Add `Secure`.
    pub secure: bool,
    /// Add `HttpOnly`.
    pub http_only: bool,
    /// Add `SameSite` when absent.
    pub same_site: SameSite,
    /// Cookie names that must stay readable by scripts.
    pub http_only_except: Vec<String>,
}

/// `[redirects]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Redirects {
    /// Rewrite Location / Content-Location / Refresh that leak the upstream.
    pub rewrite_location: bool,
}

/// `[headers]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Headers {
    /// `Strict-Transport-Security` value added to responses; empty = off.
    #[serde(deserialize_with = "optional_header_value")]
    pub hsts: Option<HeaderValue>,
    /// Response headers removed (e.g. `Server`, `X-Powered-By`).
    #[serde(deserialize_with = "header_names")]
    pub remove_response: Vec<HeaderName>,
    /// Response headers set to fixed values (replacing the app's).
    #[serde(deserialize_with = "header_table")]
    pub set_response: Vec<(HeaderName, HeaderValue)>,
    /// Request headers set to fixed values before the request goes upstream.
    #[serde(deserialize_with = "header_table")]
    pub set_request: Vec<(HeaderName, HeaderValue)>,
}

impl Default for Forwarded {
    fn default() -> Self {
        Forwarded {
            trusted_proxies: Vec::new(),
            x_forwarded_for: true,
            x_forwarded_proto: true,
            x_forwarded_host: true,
            x_forwarded_port: true,
            x_real_ip: false,
            forwarded: false,
            strip_untrusted: Vec::new(),
        }
    }
}

impl Default for Cookies {
    fn default() -> Self {
        Cookies {
            secure: true,
            http_only: true,
            same_site: SameSite::Keep,
            http_only_except: Vec::new(),
        }
    }
}

impl Default for Redirects {
    fn default() -> Self {
        Redirects { rewrite_location: true }
    }
}
