//! `X-Forwarded-Client-Cert`: a verified client certificate's identity for
//! the app, in Envoy's format (`Hash=...;Subject="...";URI=...;DNS=...`),
//! which Envoy, Istio and their apps' libraries already read.
//!
//! Pure: certificate bytes in, a header value out.

use http::HeaderValue;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The header value for a leaf certificate (DER), or `None` if it cannot be
/// read (rustls verified it, so this does not happen in practice).
pub fn header_value(leaf_der: &[u8]) -> Option<HeaderValue> {
    let (_, cert) = X509Certificate::from_der(leaf_der).ok()?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf_der);
    let mut out = String::from("Hash=");
    for b in digest.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out.push_str(";Subject=\"");
    out.push_str(&escape_quoted(&rfc4514(&cert)));
    out.push('"');
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            let (key, value) = match name {
                GeneralName::URI(uri) => ("URI", *uri),
                GeneralName::DNSName(dns) => ("DNS", *dns),
                _ => continue,
            };
            out.push(';');
            out.push_str(key);
            out.push('=');
            out.push_str(&quote_if_needed(value));
        }
    }
    HeaderValue::from_str(&out).ok()
}

/// The subject as RFC 4514 writes it: last RDN first, `,` between them.
fn rfc4514(cert: &X509Certificate<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = cert
        .subject()
        .iter_rdn()
        .map(|rdn| {
            let parts: Vec<String> = rdn
                .iter()
                .map(|attr| {
                    let oid = attr.attr_type();
                    let name = x509_parser::objects::oid2abbrev(oid, registry)
                        .map(str::to_string)
                        .unwrap_or_else(|_| oid.to_id_string());
                    let value = attr.as_str().map(escape_rfc4514).unwrap_or_else(|_| {
                        // Not a string type: RFC 4514 §2.4, `#` and the BER in hex.
                        let mut hex = String::from("#");
                        for b in attr.attr_value().data {
                            hex.push_str(&format!("{b:02x}"));
                        }
                        hex
                    });
                    format!("{name}={value}")
                })
                .collect();
            parts.join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// RFC 4514 §2.4 escaping of an attribute value.
fn escape_rfc4514(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
            out.push(c);
        } else if c.is_control() {
            out.push_str(&format!("\\{:02x}", c as u32 & 0xff));
        } else {
            out.push(c);
        }
    }
    out
}

fn escape_quoted(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Envoy quotes a value holding `,`, `;` or `=`.
fn quote_if_needed(s: &str) -> String {
    if s.contains([',', ';', '=', '"']) {
        format!("\"{}\"", escape_quoted(s))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_format_with_hash_subject_and_names() {
        let mut params = rcgen::CertificateParams::new(vec!["web.example".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc.");
        params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://example.org/ns/test/sa/web".try_into().unwrap(),
        ));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = cert.der().to_vec();
        let value = header_value(&der).unwrap();
        let text = value.to_str().unwrap();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            text,
            format!(
                "Hash={hex};Subject=\"CN=alice,O=Example\\\\, Inc.\";DNS=web.example;URI=spiffe://example.org/ns/test/sa/web"
            )
        );
        assert!(header_value(b"not a certificate").is_none());
    }

    #[test]
    fn rfc4514_escapes() {
        assert_eq!(escape_rfc4514(" #a+b;c "), "\\ #a\\+b\\;c\\ ");
        assert_eq!(escape_rfc4514("#x"), "\\#x");
        assert_eq!(quote_if_needed("a=b"), "\"a=b\"");
    }
}
