//! The doctor's report: for people (colour on a terminal) or as JSON.

use std::fmt::Write as _;

use super::findings::{Severity, FRAMEWORKS};
use super::Report;

/// One JSON object, as documented in docs/doctor.md.
pub fn render_json(report: &Report) -> String {
    let findings: Vec<serde_json::Value> = report
        .findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "code": f.code.as_str(),
                "severity": f.severity.as_str(),
                "title": f.title,
                "why": f.why,
                "fix": f.fix,
                "tlsfront_fixes": f.tlsfront_fixes,
                "tlsfront_does": f.tlsfront_does,
                "evidence": f.evidence,
            })
        })
        .collect();
    let count = |s: Severity| report.findings.iter().filter(|f| f.severity == s).count();
    serde_json::json!({
        "upstream": report.upstream,
        "public_url": report.public_url,
        "framework": report.framework,
        "findings": findings,
        "summary": {
            "errors": count(Severity::Error),
            "warnings": count(Severity::Warning),
            "infos": count(Severity::Info),
        },
        "clean": report.is_clean(),
        "notes": report.notes,
    })
    .to_string()
}

/// The report for a person; `colour` adds ANSI colours (for a terminal).
pub fn render_human(report: &Report, colour: bool) -> String {
    let paint = |code: &str, text: &str| {
        if colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let mut out = String::new();
    let framework = match report.framework {
        Some(f) => format!("looks like {}", title_case(f)),
        None => "framework not recognised: fixes for Flask, Django, Express and Rails".to_string(),
    };
    let _ = writeln!(
        out,
        "tlsfront doctor: {} as clients see it at {} ({framework})\n",
        report.upstream, report.public_url
    );
    if report.findings.is_empty() {
        let _ = writeln!(
            out,
            "{} nothing found: the app agrees with tlsfront about scheme, host and cookies.",
            paint("32", "✓")
        );
    }
    for f in &report.findings {
        let (mark, label) = match f.severity {
            Severity::Error => (paint("31;1", "✗"), paint("31;1", "error  ")),
            Severity::Warning => (paint("33;1", "!"), paint("33;1", "warning")),
            Severity::Info => (paint("36", "i"), paint("36", "info   ")),
        };
        let _ = writeln!(out, "{mark} {label} {} [{}]", paint("1", &f.title), f.code);
        let _ = writeln!(out, "          Seen: {}", f.evidence);
        let _ = writeln!(out, "          Why: {}", f.why);
        let frameworks: Vec<&str> = match report.framework {
            Some(fw) => vec![fw],
            None => FRAMEWORKS.to_vec(),
        };
        for fw in frameworks {
            if let Some(fix) = f.fix.get(fw) {
                let _ = writeln!(out, "          Fix ({}): {fix}", title_case(fw));
            }
        }
        if !f.tlsfront_does.is_empty() {
            let already = if f.tlsfront_fixes {
                "Already fixed in flight: "
            } else {
                ""
            };
            let _ = writeln!(out, "          {already}{}", f.tlsfront_does);
        }
        out.push('\n');
    }
    for note in &report.notes {
        let _ = writeln!(out, "Note: {note}");
    }
    if !report.notes.is_empty() {
        out.push('\n');
    }
    let count = |s: Severity| report.findings.iter().filter(|f| f.severity == s).count();
    let verdict = if report.has_errors() {
        paint("31;1", "sessions or security will break behind the proxy")
    } else if report.is_clean() {
        paint("32;1", "clean")
    } else {
        paint("33;1", "works behind tlsfront, but fix the warnings")
    };
    let _ = writeln!(
        out,
        "Summary: {} error(s), {} warning(s), {} info: {verdict}",
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Info)
    );
    out
}

fn title_case(s: &str) -> String {
    match s {
        "express" => "Express".into(),
        "django" => "Django".into(),
        "flask" => "Flask".into(),
        "rails" => "Rails".into(),
        other => other.to_string(),
    }
}
