//! The command-line contract: `check`, `cert`, exit codes and error messages.

use std::path::Path;
use std::process::{Command, Output};

fn tlsfront(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlsfront"))
        .args(args)
        .current_dir(dir)
        .env_remove("TLSFRONT_CONFIG")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_prints_effective_settings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.toml"),
        "[upstream]\nurl = \"http://127.0.0.1:5000\"\n",
    )
    .unwrap();
    let o = tlsfront(dir.path(), &["check", "-c", "t.toml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("url = \"http://127.0.0.1:5000\""), "{out}");
    assert!(out.contains("https = \"0.0.0.0:8443\""), "{out}");
    assert!(out.contains("secure = true"), "{out}");
}

#[test]
fn check_prints_each_routes_protection() {
    let dir = tempfile::tempdir().unwrap();
    // A real bcrypt line (`htpasswd -nbB -C 5 alice secret`).
    std::fs::write(
        dir.path().join("htpasswd"),
        "alice:$2y$05$Er3IETFsTD2dVEZChmdHjOv8/88h.uTZiJRFi2j5ws7yBOJRVPfBG\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("t.toml"),
        "[upstream]\nurl = \"http://127.0.0.1:5000\"\n[access]\nallow = [\"10.0.0.0/8\"]\n\
         [[route]]\npath = \"/login\"\nurl = \"http://127.0.0.1:5000\"\n\
         [route.auth]\nbasic = \"htpasswd\"\n[route.rate_limit]\nrequests = 10\nper = \"1m\"\n\
         [route.compression]\nenabled = false\n",
    )
    .unwrap();
    let o = tlsfront(dir.path(), &["check", "-c", "t.toml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("\n#  - route[0] (any host, /login): compression off; access allow 10.0.0.0/8; auth basic htpasswd; rate_limit 10/1m burst 10\n"),
        "{out}"
    );
    assert!(
        out.contains("\n#  - [upstream] fallback: compression zstd,br,gzip; access allow 10.0.0.0/8\n"),
        "{out}"
    );
    // Without routes, the one route that takes every request.
    std::fs::write(
        dir.path().join("u.toml"),
        "[upstream]\nurl = \"unix:/run/app/gunicorn.sock\"\n",
    )
    .unwrap();
    let o = tlsfront(dir.path(), &["check", "-c", "u.toml"]);
    assert!(
        stdout(&o).contains("\n#  - [upstream]: compression zstd,br,gzip\n"),
        "{}",
        stdout(&o)
    );
    // A weak hash is refused, naming the line and the command for a good one.
    std::fs::write(
        dir.path().join("htpasswd"),
        "# users\nbob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n",
    )
    .unwrap();
    let o = tlsfront(dir.path(), &["check", "-c", "t.toml"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("route[0].auth.basic") && err.contains("line 2") && err.contains("htpasswd -B"),
        "{err}"
    );
}

#[test]
fn check_finds_config_by_env_then_default_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/tlsfront.toml"),
        "[upstream]\nurl = \"http://127.0.0.1:7001\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("env.toml"),
        "[upstream]\nurl = \"http://127.0.0.1:7002\"\n",
    )
    .unwrap();
    let o = tlsfront(dir.path(), &["check"]);
    assert!(stdout(&o).contains("7001"), "{}", stdout(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_tlsfront"))
        .arg("check")
        .current_dir(dir.path())
        .env("TLSFRONT_CONFIG", "env.toml")
        .output()
        .unwrap();
    assert!(stdout(&o).contains("7002"), "{}", stdout(&o));
}

#[test]
fn broken_configs_exit_2_with_file_line_key_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            "[listen]\nhtps = \"0.0.0.0:8443\"\n",
            &["bad.toml", "line 2, column 1", "listen.htps", "did you mean `https`"],
        ),
        (
            "[upstream]\nconnect_timeout = \"5 parsecs\"\n",
            &["line 2, column 19", "upstream.connect_timeout", "expected like \"5s\""],
        ),
        (
            "[forwarded]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
            &["line 2", "forwarded.trusted_proxies", "CIDR"],
        ),
        (
            "[cookies]\nsame_site = \"sometimes\"\n",
            &["cookies.same_site", "keep, lax, strict, none"],
        ),
        ("[listen\n", &["line 1"]),
        (
            "[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n",
            &["/nonexistent/cert.pem", "cannot read"],
        ),
    ];
    for (text, wanted) in cases {
        std::fs::write(dir.path().join("bad.toml"), text).unwrap();
        let o = tlsfront(dir.path(), &["check", "-c", "bad.toml"]);
        assert_eq!(o.status.code(), Some(2), "{text}");
        let err = stderr(&o);
        for w in *wanted {
            assert!(err.contains(w), "expected {w:?} in: {err}");
        }
        assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
        // `run` refuses the same config the same way.
        let o = tlsfront(dir.path(), &["run", "-c", "bad.toml"]);
        assert_eq!(o.status.code(), Some(2), "{text}: {}", stderr(&o));
    }
}

#[test]
fn missing_config_file_and_bad_flags_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let o = tlsfront(dir.path(), &["check", "-c", "nope.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope.toml"), "{}", stderr(&o));
    let o = tlsfront(dir.path(), &["--upstream", "127.0.0.1:5000"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--upstream"), "{}", stderr(&o));
    let o = tlsfront(dir.path(), &["--listen", "nonsense"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--listen"), "{}", stderr(&o));
}

#[test]
fn cert_writes_ca_and_leaf_and_reuses_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let o = tlsfront(dir.path(), &["cert", "--out", "out"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = dir.path().join("out");
    for f in ["ca.pem", "ca-key.pem", "cert.pem", "key.pem"] {
        assert!(out.join(f).exists(), "{f}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["ca-key.pem", "key.pem"] {
            assert_eq!(
                std::fs::metadata(out.join(f)).unwrap().permissions().mode() & 0o777,
                0o600,
                "{f}"
            );
        }
    }
    let ca = std::fs::read(out.join("ca.pem")).unwrap();
    let o = tlsfront(
        dir.path(),
        &["cert", "--out", "out", "--host", "app.test", "--host", "10.0.0.1"],
    );
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("reused"), "{}", stdout(&o));
    assert_eq!(std::fs::read(out.join("ca.pem")).unwrap(), ca);
    // The certificate is usable by the proxy: check accepts it.
    std::fs::write(
        dir.path().join("c.toml"),
        "[tls]\ncert = \"out/cert.pem\"\nkey = \"out/key.pem\"\n",
    )
    .unwrap();
    let o = tlsfront(dir.path(), &["check", "-c", "c.toml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn mismatched_cert_and_key_exit_2_naming_the_files() {
    let dir = tempfile::tempdir().unwrap();
    assert!(tlsfront(dir.path(), &["cert", "--out", "a"]).status.success());
    assert!(tlsfront(dir.path(), &["cert", "--out", "b"]).status.success());
    let o = tlsfront(
        dir.path(),
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            "a/cert.pem",
            "--key",
            "b/key.pem",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("b/key.pem") && err.contains("a/cert.pem"), "{err}");
    std::fs::write(dir.path().join("garbage.pem"), "not a pem").unwrap();
    let o = tlsfront(
        dir.path(),
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            "garbage.pem",
            "--key",
            "a/key.pem",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("garbage.pem"), "{}", stderr(&o));
}

/// `tlsfront check | head` (or any reader that goes away): the report ends,
/// the exit code is still the configuration's, and nothing panics.
#[test]
fn check_into_a_closed_pipe_exits_0_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.toml"),
        "[upstream]\nurl = \"http://127.0.0.1:5000\"\n",
    )
    .unwrap();
    // The reading end is closed before tlsfront writes a byte, so its very
    // first write fails with a broken pipe (no pipe buffer to absorb it).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = Command::new(env!("CARGO_BIN_EXE_tlsfront"))
        .args(["check", "-c", "t.toml"])
        .current_dir(dir.path())
        .env_remove("TLSFRONT_CONFIG")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
