//! Login forms: finding one in a page, filling it the way a browser would
//! with credentials that cannot log anyone in, and telling a CSRF/origin
//! rejection of the POST from a plain "wrong password". Pure, no I/O.
//!
//! HTML is read with `html5gum`, a WHATWG-conformant tokenizer with no
//! dependencies: it gets attribute quoting, entities (`&amp;` in a token),
//! comments and `<script>` contents right where a hand-written scan would
//! not, without the weight of a DOM (html5ever, scraper). A login form needs
//! only tags and attributes, so a tokenizer is all it takes.

use html5gum::{DefaultEmitter, Token, Tokenizer};
use http::StatusCode;

/// The user name the doctor posts: an account no app should have.
pub const DUMMY_USER: &str = "tlsfront-doctor";
/// The e-mail address the doctor posts in `type=email` fields (`.invalid` is reserved, RFC 2606).
pub const DUMMY_EMAIL: &str = "tlsfront-doctor@example.invalid";

/// A `<form method="post">` with a password field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginForm {
    /// The `action` attribute as written (entities decoded); `None` or empty: the page itself.
    pub action: Option<String>,
    /// `enctype="multipart/form-data"`.
    pub multipart: bool,
    /// The controls a browser would submit, in document order.
    pub controls: Vec<Control>,
}

/// One form control that takes part in the submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// Its `name`.
    pub name: String,
    /// What goes in it.
    pub kind: ControlKind,
}

/// How the doctor fills a control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlKind {
    /// Sent as the page gave it: hidden inputs (CSRF tokens), checked boxes, the submit button.
    Fixed(String),
    /// A text-like field: the dummy user name.
    User,
    /// `type=email`: the dummy address.
    Email,
    /// `type=password`: the dummy password.
    Password,
}

impl LoginForm {
    /// The name/value pairs a browser would post, with the given dummy password.
    pub fn fill(&self, password: &str) -> Vec<(String, String)> {
        self.controls
            .iter()
            .map(|c| {
                let value = match &c.kind {
                    ControlKind::Fixed(v) => v.clone(),
                    ControlKind::User => DUMMY_USER.to_string(),
                    ControlKind::Email => DUMMY_EMAIL.to_string(),
                    ControlKind::Password => password.to_string(),
                };
                (c.name.clone(), value)
            })
            .collect()
    }
}

/// The first login form (POST, with a password field) in `html`.
pub fn find_login_form(html: &str) -> Option<LoginForm> {
    let mut emitter = DefaultEmitter::default();
    // Switch to raw-text states after <script>, <style>, <textarea>…, as a
    // browser does, so markup inside a script is not taken for a form.
    emitter.naively_switch_states(true);
    let mut current: Option<(LoginForm, bool, bool)> = None; // (form, is post, has password)
    let mut submitter_seen = false;
    for Ok(token) in Tokenizer::new_with_emitter(html, emitter) {
        match token {
            Token::StartTag(tag) => {
                let attr = |name: &str| {
                    tag.attributes
                        .get(name.as_bytes())
                        .map(|v| String::from_utf8_lossy(&v.value).into_owned())
                };
                match tag.name.as_slice() {
                    b"form" if current.is_none() => {
                        let post = attr("method").is_some_and(|m| m.trim().eq_ignore_ascii_case("post"));
                        let multipart =
                            attr("enctype").is_some_and(|e| e.trim().eq_ignore_ascii_case("multipart/form-data"));
                        let form = LoginForm {
                            action: attr("action"),
                            multipart,
                            controls: Vec::new(),
                        };
                        current = Some((form, post, false));
                        submitter_seen = false;
                    }
                    b"input" | b"button" => {
                        let Some((form, _, has_password)) = current.as_mut() else {
                            continue;
                        };
                        let Some(name) = attr("name").filter(|n| !n.is_empty()) else {
                            *has_password |= attr("type").is_some_and(|t| t.eq_ignore_ascii_case("password"));
                            continue;
                        };
                        if attr("disabled").is_some() {
                            continue;
                        }
                        let default_type = if tag.name == b"button" { "submit" } else { "text" };
                        let kind = attr("type")
                            .unwrap_or_else(|| default_type.to_string())
                            .to_ascii_lowercase();
                        let value = attr("value");
                        let control = match kind.as_str() {
                            "password" => {
                                *has_password = true;
                                Some(ControlKind::Password)
                            }
                            "email" => Some(ControlKind::Email),
                            "text" | "search" | "tel" | "url" => Some(ControlKind::User),
                            "hidden" => Some(ControlKind::Fixed(value.unwrap_or_default())),
                            "checkbox" | "radio" if attr("checked").is_some() => {
                                Some(ControlKind::Fixed(value.unwrap_or_else(|| "on".into())))
                            }
                            // The button that submits the form is part of the data (Rails' `commit`).
                            "submit" if !submitter_seen => {
                                submitter_seen = true;
                                Some(ControlKind::Fixed(value.unwrap_or_default()))
                            }
                            _ => None,
                        };
                        if let Some(kind) = control {
                            form.controls.push(Control { name, kind });
                        }
                    }
                    _ => {}
                }
            }
            Token::EndTag(tag) if tag.name.as_slice() == b"form" => {
                if let Some((form, true, true)) = current.take() {
                    return Some(form);
                }
            }
            _ => {}
        }
    }
    // A form left open at the end of the page still counts, as in a browser.
    match current {
        Some((form, true, true)) => Some(form),
        _ => None,
    }
}

/// `application/x-www-form-urlencoded`, as browsers encode it.
pub fn urlencode(fields: &[(String, String)]) -> String {
    fn enc(s: &str, out: &mut String) {
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b as char),
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        enc(name, &mut out);
        out.push('=');
        enc(value, &mut out);
    }
    out
}

/// `multipart/form-data` with `boundary`; returns the body.
pub fn multipart(fields: &[(String, String)], boundary: &str) -> String {
    let mut out = String::new();
    for (name, value) in fields {
        let name = name.replace('"', "%22").replace(['\r', '\n'], " ");
        out.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}

/// Where a form posts to, relative to the page at `page` (a path with an
/// optional query): the request target on the app, or `None` when the
/// action is another site. `ours` says whether an absolute URL's authority
/// is the app's (public or internal address).
pub fn resolve_action(page: &str, action: Option<&str>, ours: impl Fn(&str) -> bool) -> Option<String> {
    let action = action.map(str::trim).unwrap_or("");
    let action = action.split('#').next().unwrap_or("");
    if action.is_empty() {
        return Some(page.to_string());
    }
    let lower = action.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") || action.starts_with("//") {
        let rest = &action[action.find("//")? + 2..];
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        if !ours(&rest[..end].to_ascii_lowercase()) {
            return None;
        }
        let target = &rest[end..];
        return Some(if target.starts_with('?') {
            format!("/{target}")
        } else if target.is_empty() {
            "/".to_string()
        } else {
            target.to_string()
        });
    }
    if action.starts_with('/') {
        return Some(action.to_string());
    }
    let page_path = page.split('?').next().unwrap_or("/");
    if action.starts_with('?') {
        return Some(format!("{page_path}{action}"));
    }
    let dir = &page_path[..page_path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    Some(format!("{dir}{action}"))
}

/// Whether the answer to the login POST is the framework's CSRF/origin
/// check refusing it; `Some` names what gave it away.
///
/// Only the page's text is searched, never its attributes: a login page
/// shown again with "wrong password" carries its CSRF token in a hidden
/// input, and that is a clean rejection.
pub fn csrf_rejection(status: StatusCode, body: &str) -> Option<String> {
    // Laravel's "Page Expired" is the CSRF failure and nothing else.
    if status.as_u16() == 419 {
        return Some(format!("status {status}"));
    }
    if !matches!(status.as_u16(), 400 | 403 | 422) {
        return None;
    }
    // One line of words; lowercased for matching (ASCII only, so offsets agree).
    let text = page_text(body).split_whitespace().collect::<Vec<_>>().join(" ");
    let lower = text.to_ascii_lowercase();
    const MARKERS: [&str; 10] = [
        "csrf",
        "xsrf",
        "authenticity token",
        "invalidauthenticitytoken",
        // Rails' public/422.html, what a production Rails app shows on InvalidAuthenticityToken.
        "the change you wanted was rejected",
        "forgery",
        "origin checking failed",
        "referer checking failed",
        "referrer does not match",
        "referrer header is missing",
    ];
    MARKERS
        .iter()
        .find_map(|m| lower.find(m))
        .map(|at| format!("status {status}, the page says \"{}\"", excerpt(&text, at)))
}

/// The text of a page (no tags, no attributes, no scripts or styles).
fn page_text(html: &str) -> String {
    let mut emitter = DefaultEmitter::default();
    emitter.naively_switch_states(true);
    let mut out = String::new();
    let mut hidden_depth = 0usize;
    for Ok(token) in Tokenizer::new_with_emitter(html, emitter) {
        match token {
            Token::StartTag(tag) if matches!(tag.name.as_slice(), b"script" | b"style") => hidden_depth += 1,
            Token::EndTag(tag) if matches!(tag.name.as_slice(), b"script" | b"style") => {
                hidden_depth = hidden_depth.saturating_sub(1)
            }
            Token::String(s) if hidden_depth == 0 => {
                out.push_str(&String::from_utf8_lossy(&s.value));
                out.push(' ');
            }
            _ => {}
        }
    }
    if out.trim().is_empty() && !html.contains('<') {
        // A plain-text answer ("Forbidden (CSRF token missing)").
        return html.to_string();
    }
    out
}

/// The text around byte offset `at` of `text` (about 40 characters before, 80 after).
fn excerpt(text: &str, at: usize) -> String {
    let start = text[..at].char_indices().rev().nth(40).map_or(0, |(i, _)| i);
    let end = text[at..].char_indices().nth(80).map_or(text.len(), |(i, _)| at + i);
    text[start..end].trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DJANGO: &str = r#"<!doctype html><html><body>
<script>var x = '<form method="post"><input type="password" name="fake"></form>';</script>
<form method="get" action="/search"><input name="q"></form>
<form method="post" action="/login/?next=%2F&amp;x=1">
  <input type="hidden" name="csrfmiddlewaretoken" value="tok&amp;en">
  <input name="username" autofocus>
  <input name="email" type="email">
  <input name="password" type=password>
  <input type="checkbox" name="remember" checked>
  <input type="checkbox" name="newsletter">
  <input type="text" name="gone" disabled>
  <button type="submit" name="commit" value="Log in">Log in</button>
  <button type="submit" name="other" value="x">Other</button>
</form></body></html>"#;

    #[test]
    fn finds_the_login_form_not_the_script_or_the_search() {
        let form = find_login_form(DJANGO).expect("a login form");
        assert_eq!(form.action.as_deref(), Some("/login/?next=%2F&x=1"));
        assert!(!form.multipart);
        let filled = form.fill("pw");
        let pairs: Vec<(&str, &str)> = filled.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            vec![
                ("csrfmiddlewaretoken", "tok&en"),
                ("username", DUMMY_USER),
                ("email", DUMMY_EMAIL),
                ("password", "pw"),
                ("remember", "on"),
                ("commit", "Log in"),
            ]
        );
    }

    #[test]
    fn no_login_form_without_a_password_or_a_post() {
        assert_eq!(find_login_form("<form method=post><input name=q></form>"), None);
        assert_eq!(
            find_login_form("<form action=/l><input type=password name=p></form>"),
            None
        );
        assert_eq!(find_login_form(""), None);
        assert_eq!(find_login_form("<form method=post><input type=password name=p"), None);
        assert!(find_login_form("<FORM METHOD=POST><INPUT TYPE=PASSWORD NAME=p>").is_some());
    }

    #[test]
    fn encodes_like_a_browser() {
        let f = vec![("a b".to_string(), "x&y=z/é".to_string()), ("c".into(), String::new())];
        assert_eq!(urlencode(&f), "a+b=x%26y%3Dz%2F%C3%A9&c=");
        let body = multipart(&f, "B");
        assert!(body.starts_with("--B\r\nContent-Disposition: form-data; name=\"a b\"\r\n\r\nx&y=z/é\r\n"));
        assert!(body.ends_with("--B--\r\n"));
    }

    #[test]
    fn resolves_actions() {
        let ours = |a: &str| a == "localhost:8443" || a == "127.0.0.1:5000";
        assert_eq!(
            resolve_action("/login?next=/", None, ours).as_deref(),
            Some("/login?next=/")
        );
        assert_eq!(resolve_action("/a/login", Some(""), ours).as_deref(), Some("/a/login"));
        assert_eq!(
            resolve_action("/a/login", Some("session"), ours).as_deref(),
            Some("/a/session")
        );
        assert_eq!(
            resolve_action("/a/login", Some("?x=1#f"), ours).as_deref(),
            Some("/a/login?x=1")
        );
        assert_eq!(resolve_action("/", Some("/s"), ours).as_deref(), Some("/s"));
        assert_eq!(
            resolve_action("/", Some("http://localhost:8443/login"), ours).as_deref(),
            Some("/login")
        );
        assert_eq!(
            resolve_action("/", Some("https://127.0.0.1:5000?x"), ours).as_deref(),
            Some("/?x")
        );
        assert_eq!(resolve_action("/", Some("https://idp.example.com/login"), ours), None);
        assert_eq!(resolve_action("/", Some("//idp.example.com/login"), ours), None);
    }

    #[test]
    fn tells_csrf_rejections_from_wrong_passwords() {
        let django = "<h1>Forbidden <span>(403)</span></h1><p>CSRF verification failed. Request aborted.</p>";
        assert!(csrf_rejection(StatusCode::FORBIDDEN, django).is_some_and(|w| w.contains("CSRF verification failed.")));
        let rails = "<html><body><h1>The change you wanted was rejected.</h1></body></html>";
        assert!(csrf_rejection(StatusCode::UNPROCESSABLE_ENTITY, rails).is_some());
        assert!(csrf_rejection(StatusCode::BAD_REQUEST, "CSRF token missing or wrong\n").is_some());
        assert!(csrf_rejection(StatusCode::from_u16(419).unwrap(), "Page Expired").is_some());
        // The form again, with its token in a hidden input: wrong password, not CSRF.
        let again = r#"<p>Invalid username or password.</p><form method=post><input type=hidden name=csrf_token value=t></form>"#;
        for status in [
            StatusCode::OK,
            StatusCode::UNAUTHORIZED,
            StatusCode::BAD_REQUEST,
            StatusCode::UNPROCESSABLE_ENTITY,
        ] {
            assert_eq!(csrf_rejection(status, again), None, "{status}");
        }
        assert_eq!(csrf_rejection(StatusCode::FOUND, django), None);
        assert_eq!(
            csrf_rejection(StatusCode::FORBIDDEN, "<script>csrf()</script><p>Forbidden</p>"),
            None
        );
    }
}
