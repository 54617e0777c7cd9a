//! The htpasswd reader of `[auth] basic` (`tlsfront::htpasswd::parse`).
//!
//! Input: the file's bytes (as UTF-8, lossily: the file is read as text).
//!
//! Properties:
//!  1. never panics;
//!  2. accepted files hold only bcrypt or argon2 hashes, of users with no
//!     control characters, each user once;
//!  3. an error names a line that exists (or 0, the whole file);
//!  4. every entry is a line of the file, `user:hash` as written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tlsfront::htpasswd::{parse, PasswordHash};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse(&text) {
        Ok(entries) => {
            assert!(!entries.is_empty());
            for (i, e) in entries.iter().enumerate() {
                assert!(!e.user.is_empty() && !e.user.chars().any(char::is_control));
                assert!(entries[..i].iter().all(|o| o.user != e.user));
                match &e.hash {
                    PasswordHash::Bcrypt(h) => assert!(h.starts_with("$2")),
                    PasswordHash::Argon2(h) => assert!(h.starts_with("$argon2")),
                }
                let line = format!("{}:{}", e.user, e.hash.as_str());
                assert!(
                    text.lines().any(|l| l.trim() == line),
                    "{line:?} is not a line of the file"
                );
            }
        }
        Err(e) => assert!(
            e.line <= text.lines().count(),
            "line {} of {}",
            e.line,
            text.lines().count()
        ),
    }
});
