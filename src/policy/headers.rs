//! Fixed headers from `[headers]`: HSTS, removed and set response headers,
//! set request headers. The operator's word wins over the app's.

use http::header::{HeaderMap, HeaderName, HeaderValue, STRICT_TRANSPORT_SECURITY};

use crate::config;

/// The `[headers]` rules, ready to apply.
#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    hsts: Option<HeaderValue>,
    remove_response: Vec<HeaderName>,
    set_response: Vec<(HeaderName, HeaderValue)>,
    set_request: Vec<(HeaderName, HeaderValue)>,
}

impl From<&config::Headers> for HeaderRules {
    fn from(c: &config::Headers) -> Self {
        HeaderRules {
            hsts: c.hsts.clone(),
            remove_response: c.remove_response.clone(),
            set_response: c.set_response.clone(),
            set_request: c.set_request.clone(),
        }
    }
}

impl HeaderRules {
    /// Sets the fixed request headers (after forwarding policy, so the operator wins).
    pub fn apply_request(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set_request {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// Removes, then sets, then adds HSTS.
    pub fn apply_response(&self, headers: &mut HeaderMap) {
        for name in &self.remove_response {
            headers.remove(name);
        }
        for (name, value) in &self.set_response {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(hsts) = &self.hsts {
            headers.insert(STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_set_and_hsts() {
        let config: config::Config = config::Config::from_toml(
            "[headers]\nhsts = \"max-age=63072000\"\nremove_response = [\"Server\", \"x-powered-by\"]\n\
             set_response = { \"X-Frame-Options\" = \"DENY\" }\nset_request = { \"X-From-Proxy\" = \"tlsfront\" }\n",
            "t",
        )
        .unwrap();
        let rules = HeaderRules::from(&config.headers);
        let mut resp = HeaderMap::new();
        resp.insert("server", HeaderValue::from_static("Werkzeug/3.1"));
        resp.insert("x-powered-by", HeaderValue::from_static("Express"));
        resp.insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
        resp.insert("strict-transport-security", HeaderValue::from_static("max-age=1"));
        rules.apply_response(&mut resp);
        assert!(resp.get("server").is_none() && resp.get("x-powered-by").is_none());
        assert_eq!(resp["x-frame-options"], "DENY");
        assert_eq!(resp.get_all("strict-transport-security").iter().count(), 1);
        assert_eq!(resp["strict-transport-security"], "max-age=63072000");
        let mut req = HeaderMap::new();
        req.insert("x-from-proxy", HeaderValue::from_static("client-said"));
        rules.apply_request(&mut req);
        assert_eq!(req["x-from-proxy"], "tlsfront");
    }

    #[test]
    fn defaults_change_nothing() {
        let rules = HeaderRules::default();
        let mut h = HeaderMap::new();
        h.insert("server", HeaderValue::from_static("x"));
        rules.apply_response(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.get(STRICT_TRANSPORT_SECURITY).is_none());
    }
}
