//! The htpasswd file of `[auth] basic`: one `user:hash` per line.
//!
//! Only slow, salted hashes are accepted: bcrypt (`$2y$`, `$2b$`, `$2a$`,
//! what `htpasswd -B` writes) and argon2 (`$argon2id$`, `$argon2i$`,
//! `$argon2d$`). MD5-crypt (`$apr1$`, `htpasswd`'s old default), SHA-1
//! (`{SHA}`), DES crypt and plain text can be brute-forced from a leaked
//! file in hours, so such a line is an error naming the line and the command
//! that makes a good one, never a silent refusal at login.
//!
//! Pure: text in, entries or an error out (fuzzed in `fuzz/`).

use std::fmt;

/// Argon2 memory above this is refused: each login attempt would take it.
pub const MAX_ARGON2_KIB: u32 = 64 * 1024;
/// Argon2 passes above this are refused (each is a pass over all the memory).
pub const MAX_ARGON2_TIME: u32 = 16;
/// Argon2 lanes above this are refused.
pub const MAX_ARGON2_LANES: u32 = 16;
/// bcrypt cost above this is refused: one check would take seconds.
pub const MAX_BCRYPT_COST: u32 = 14;

/// The hash of one user's password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$2y$`, `$2b$`, `$2a$`
    Bcrypt(String),
    /// PHC string `$argon2id$v=19$m=...,t=...,p=...$salt$hash`
    Argon2(String),
}

impl PasswordHash {
    /// The hash as written.
    pub fn as_str(&self) -> &str {
        match self {
            PasswordHash::Bcrypt(s) | PasswordHash::Argon2(s) => s,
        }
    }
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The user name (what `X-Forwarded-User` says).
    pub user: String,
    /// Their password's hash.
    pub hash: PasswordHash,
}

/// Why a file cannot be used, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtpasswdError {
    /// 1-based line number; 0 for the file as a whole.
    pub line: usize,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for HtpasswdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

const MAKE_ONE: &str = "make a bcrypt line with `htpasswd -B FILE USER`";

/// Reads a whole file. Blank lines and `#` comments are skipped; a user
/// listed twice is an error (which line would win is not obvious).
pub fn parse(text: &str) -> Result<Vec<Entry>, HtpasswdError> {
    let mut entries: Vec<Entry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| HtpasswdError { line: line_no, message };
        let Some((user, hash)) = line.split_once(':') else {
            return Err(err(format!("expected `user:hash`; {MAKE_ONE}")));
        };
        if user.is_empty() || user.chars().any(|c| c.is_control()) {
            return Err(err("the user name is empty or has control characters".into()));
        }
        if entries.iter().any(|e| e.user == user) {
            return Err(err(format!("user {user:?} is listed twice")));
        }
        let hash = parse_hash(hash).map_err(err)?;
        entries.push(Entry {
            user: user.to_string(),
            hash,
        });
    }
    if entries.is_empty() {
        return Err(HtpasswdError {
            line: 0,
            message: format!("has no users, so nobody could log in; {MAKE_ONE}"),
        });
    }
    Ok(entries)
}

fn parse_hash(hash: &str) -> Result<PasswordHash, String> {
    let weak = |what: &str| Err(format!("{what} is too weak to store passwords; {MAKE_ONE}"));
    if let Some(rest) = ["$2y$", "$2b$", "$2a$"].iter().find_map(|p| hash.strip_prefix(p)) {
        // $2y$10$ + 22 characters of salt + 31 of hash.
        let (cost, body) = rest.split_once('$').unwrap_or((rest, ""));
        let cost: u32 = match cost.parse() {
            Ok(c) if (4..=31).contains(&c) && cost.len() == 2 => c,
            _ => return Err(format!("bad bcrypt cost {cost:?}; {MAKE_ONE}")),
        };
        if body.len() != 53
            || !body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
        {
            return Err(format!("malformed bcrypt hash; {MAKE_ONE}"));
        }
        if cost > MAX_BCRYPT_COST {
            return Err(format!(
                "bcrypt cost {cost} makes every login take seconds of CPU; use at most {MAX_BCRYPT_COST} (`htpasswd -B -C 12`)"
            ));
        }
        return Ok(PasswordHash::Bcrypt(hash.to_string()));
    }
    if hash.starts_with("$argon2") {
        return parse_argon2(hash).map(|()| PasswordHash::Argon2(hash.to_string()));
    }
    if hash.starts_with("$apr1$") || hash.starts_with("$1$") {
        return weak("MD5-crypt (`htpasswd -m`)");
    }
    if hash.starts_with("{SHA}") {
        return weak("SHA-1 (`htpasswd -s`)");
    }
    if hash.starts_with("$5$") || hash.starts_with("$6$") {
        return weak("SHA-crypt (fast to brute-force)");
    }
    if hash.len() == 13
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    {
        return weak("DES crypt (`htpasswd -d`)");
    }
    weak("a plain-text or unknown password")
}

/// Checks the PHC string's shape and parameters without verifying anything.
fn parse_argon2(hash: &str) -> Result<(), String> {
    let parts: Vec<&str> = hash.split('$').collect();
    // "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
    let bad = || {
        Err(format!(
            "malformed argon2 hash (expected $argon2id$v=19$m=...,t=...,p=...$salt$hash); {MAKE_ONE}"
        ))
    };
    if parts.len() != 6 || !matches!(parts[1], "argon2id" | "argon2i" | "argon2d") || parts[2] != "v=19" {
        return bad();
    }
    let mut memory = None;
    for param in parts[3].split(',') {
        let Some((k, v)) = param.split_once('=') else {
            return bad();
        };
        let Ok(v) = v.parse::<u32>() else {
            return bad();
        };
        match k {
            "m" => memory = Some(v),
            "t" if v > MAX_ARGON2_TIME => {
                return Err(format!(
                    "argon2 time cost t={v} makes every login take too long; use at most t={MAX_ARGON2_TIME}"
                ))
            }
            "p" if v > MAX_ARGON2_LANES => {
                return Err(format!("argon2 parallelism p={v}; use at most p={MAX_ARGON2_LANES}"))
            }
            "t" | "p" => {}
            _ => return bad(),
        }
    }
    let Some(memory) = memory else {
        return bad();
    };
    if memory > MAX_ARGON2_KIB {
        return Err(format!(
            "argon2 memory m={memory} KiB: every login attempt would take that much; use at most m={MAX_ARGON2_KIB}"
        ));
    }
    let b64 = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !b64(parts[4]) || !b64(parts[5]) {
        return bad();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BCRYPT: &str = "$2y$05$HBQQq2u7SGbU3/mvGq.oe.5rYsQmaa/NDOhLP8fAIXxktbIJd0Yi2";
    const ARGON2: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";

    #[test]
    fn good_lines_are_read() {
        let text = format!("# users\n\nalice:{BCRYPT}\nbob:{ARGON2}\n");
        let entries = parse(&text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].user, "alice");
        assert_eq!(entries[0].hash, PasswordHash::Bcrypt(BCRYPT.into()));
        assert_eq!(entries[1].hash, PasswordHash::Argon2(ARGON2.into()));
    }

    #[test]
    fn weak_and_broken_lines_name_the_line_and_the_command() {
        for (line, what) in [
            ("carol:$apr1$abc$defghijklmnopqrstuvwx1", "MD5-crypt"),
            ("carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
            ("carol:abcdefghijklm", "DES"),
            ("carol:hunter2", "plain-text"),
            ("carol", "user:hash"),
            ("carol:$2y$05$short", "malformed bcrypt"),
            (
                "carol:$2y$16$HBQQq2u7SGbU3/mvGq.oe.5rYsQmaa/NDOhLP8fAIXxktbIJd0Yi2",
                "cost 16",
            ),
            (
                "carol:$argon2id$v=19$m=1048576,t=2,p=1$c29tZXNhbHQ$RdescudvJCsg",
                "memory",
            ),
            ("carol:$argon2id$v=19$t=2$c29tZXNhbHQ$RdescudvJCsg", "malformed argon2"),
            (
                "carol:$argon2id$v=19$m=19456,t=100000,p=1$c29tZXNhbHQ$RdescudvJCsg",
                "time cost",
            ),
        ] {
            let e = parse(&format!("alice:{BCRYPT}\n{line}\n")).unwrap_err();
            assert_eq!(e.line, 2, "{line}");
            assert!(e.message.contains(what), "{line}: {}", e.message);
        }
        let e = parse("carol:hunter2\n").unwrap_err();
        assert!(e.to_string().contains("htpasswd -B"), "{e}");
        assert!(parse("# nobody\n").unwrap_err().message.contains("no users"));
        assert!(parse(&format!("a:{BCRYPT}\na:{BCRYPT}\n"))
            .unwrap_err()
            .message
            .contains("twice"));
    }
}
