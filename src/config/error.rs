//! Configuration errors as a person reads them: the file, the line and
//! column, the full key, what was expected.

use std::fmt;

/// A configuration that could not be used, with everything a person needs to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or "built-in defaults", or "command line").
    pub source: String,
    /// 1-based line and column, where TOML is involved.
    pub position: Option<(usize, usize)>,
    /// Full dotted key, e.g. `upstream.connect_timeout`, when known.
    pub key: Option<String>,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// One line, whatever the file contained: control characters are escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one_line = |s: &str| {
            s.chars()
                .flat_map(|c| {
                    if c.is_control() {
                        c.escape_default().collect::<Vec<_>>()
                    } else {
                        vec![c]
                    }
                })
                .collect::<String>()
        };
        write!(f, "invalid configuration in {}", one_line(&self.source))?;
        if let Some((line, col)) = self.position {
            write!(f, " at line {line}, column {col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{}`", one_line(key))?;
        }
        write!(f, ": {}", one_line(&self.message))
    }
}

impl std::error::Error for ConfigError {}

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let col = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
    (line, col)
}

/// The known word closest to a misspelt one, if any is close.
fn did_you_mean<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(&word.to_lowercase(), &k.to_lowercase()), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// Turns serde/toml wording into a message a person understands, with a
/// "did you mean" for misspelt keys.
pub(super) fn explain_toml_error(path: &str, message: &str) -> (Option<String>, String) {
    let message = message.trim();
    let path = (path != "." && !path.is_empty()).then(|| path.to_string());
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((field, expected)) = rest.split_once('`') {
            let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            let key = match &path {
                Some(p) if p.ends_with(field) => p.clone(),
                Some(p) => format!("{p}.{field}"),
                None => field.to_string(),
            };
            let suggestion = did_you_mean(field, &known)
                .map(|k| format!("did you mean `{k}`? "))
                .unwrap_or_default();
            return (
                Some(key),
                format!(
                    "unknown key `{field}`; {suggestion}known keys here: {}",
                    known.join(", ")
                ),
            );
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        if let Some((value, expected)) = rest.rsplit_once("`, expected") {
            let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            let suggestion = did_you_mean(value, &known)
                .map(|k| format!("did you mean {k:?}? "))
                .unwrap_or_default();
            return (
                path,
                format!(
                    "{value:?} is not allowed; {suggestion}expected one of {}",
                    known.join(", ")
                ),
            );
        }
    }
    (
        path,
        message
            .split('\n')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
    )
}
