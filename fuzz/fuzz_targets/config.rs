//! Configuration parsing (`tlsfront::config::Config::from_toml`) and its
//! TOML `Display`.
//!
//! Input: a TOML document (inputs that are not UTF-8 are skipped: the file is
//! read with `read_to_string`, which rejects them before the parser).
//!
//! Properties:
//!  1. never panics;
//!  2. on `Ok(config)`: `config.to_string()` (the effective settings, printed
//!     as TOML) parses again, to the same settings (every field, compared
//!     through `Debug`), and prints the same;
//!  3. on `Err(e)`: `e.to_string()` is one line (no `\n`, no `\r`) and names the
//!     source ("fuzz.toml").
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use tlsfront::config::Config;

const SOURCE: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(text, SOURCE) {
        Ok(config) => {
            let shown = config.to_string();
            let again = Config::from_toml(&shown, "display.toml").unwrap_or_else(|e| {
                panic!("Display output does not parse again: {e}\n--- input ---\n{text}\n--- display ---\n{shown}")
            });

            // The printed settings mean the same: every field, not only the
            // printed ones, survives the round trip.
            let mut again_full = again.clone();
            // Known finding C6: Display leaves out log.access, log.format and six
            // [limits] keys, so pasting it back resets them to their defaults.
            if common::known("config-display-omits-keys") {
                again_full.log.access = config.log.access;
                again_full.log.format = config.log.format;
                let (a, c) = (&mut again_full.limits, &config.limits);
                a.max_request_header_bytes = c.max_request_header_bytes;
                a.max_request_body_bytes = c.max_request_body_bytes;
                a.idle_timeout = c.idle_timeout;
                a.max_connections = c.max_connections;
                a.max_concurrent_streams = c.max_concurrent_streams;
                a.max_pending_reset_streams = c.max_pending_reset_streams;
            }
            let (before_dbg, after_dbg) = (format!("{config:#?}"), format!("{again_full:#?}"));
            if before_dbg != after_dbg {
                let diff: Vec<String> = before_dbg
                    .lines()
                    .zip(after_dbg.lines())
                    .filter(|(a, b)| a != b)
                    .map(|(a, b)| format!("  {}  →  {}", a.trim(), b.trim()))
                    .take(10)
                    .collect();
                panic!(
                    "the printed config means something else (parsed → printed → parsed):\n{}\n--- input ---\n{text}\n--- display ---\n{shown}",
                    diff.join("\n")
                );
            }

            let shown_again = again.to_string();
            assert_eq!(
                shown, shown_again,
                "Display does not round-trip\n--- input ---\n{text}\n--- display ---\n{shown}\n--- display of that ---\n{shown_again}"
            );
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(
                !shown.contains(['\n', '\r']),
                "error message spans lines: {shown:?}\n--- input ---\n{text}"
            );
            assert!(
                shown.contains(SOURCE),
                "error message does not name the source: {shown:?}"
            );
        }
    }
});
