//! Several certificates chosen by SNI, against the real binary: real TLS
//! clients that send (or do not send) SNI, certificates made here with
//! rcgen and signed by a test CA.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Proxy;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// A CA that signs the test certificates; clients trust it.
struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: tempfile::TempDir,
}

/// A certificate written to disk, with what a client should see.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
    not_after: i64,
}

impl TestCa {
    fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "sni test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        TestCa { cert, key, dir }
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A leaf for `names`, valid until `year`-01-02, written as `<file>.pem`
    /// and `<file>-key.pem`.
    fn leaf(&self, file: &str, names: &[&str], year: i32) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.not_after = rcgen::date_time_ymd(year, 1, 2);
        let not_after = params.not_after.unix_timestamp();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let leaf = Leaf {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}-key.pem")),
            der: cert.der().to_vec(),
            not_after,
        };
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }
}

fn table(leaf: &Leaf, names: Option<&[&str]>) -> String {
    let mut t = format!(
        "\n[[tls.certificate]]\ncert = {:?}\nkey = {:?}\n",
        leaf.cert.display().to_string(),
        leaf.key.display().to_string()
    );
    if let Some(names) = names {
        t.push_str(&format!("names = {names:?}\n"));
    }
    t
}

fn start(config: &str) -> Proxy {
    // No request reaches the app in these tests: only handshakes.
    Proxy::start_with_args(config, &["--upstream", "http://127.0.0.1:9"])
}

/// The certificate served to a client sending `sni` (or no SNI).
async fn served(port: u16, sni: Option<&str>) -> Vec<u8> {
    common::served_leaf(port, sni).await.expect("TLS handshake")
}

/// A handshake as a browser does it: SNI `name`, the chain verified against
/// the test CA for that name. Returns the served certificate.
async fn verified(port: u16, ca: &Path, name: &str) -> Vec<u8> {
    let connector = common::connector(ca, &[b"http/1.1"]);
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        connector.connect(ServerName::try_from(name.to_string()).unwrap(), tcp),
    )
    .await
    .expect("handshake within 10 s")
    .unwrap_or_else(|e| panic!("verified handshake for {name}: {e}"));
    tls.get_ref().1.peer_certificates().unwrap()[0].as_ref().to_vec()
}

#[tokio::test]
async fn sni_chooses_the_certificate_and_unknown_or_absent_sni_gets_the_first() {
    let ca = TestCa::new();
    let a = ca.leaf("a", &["a.test", "www.a.test"], 2031);
    let wild = ca.leaf("wild", &["*.wild.test"], 2032);
    let b = ca.leaf("b", &["b.test", "other.test"], 2033);
    let config = format!(
        // No development certificate: exactly the three tables are served.
        "[tls]\nself_signed_hosts = []\n[admin]\nlisten = \"127.0.0.1:0\"\n{}{}{}",
        table(&a, None),
        table(&wild, None),
        table(&b, Some(&["B.test."])),
    );
    let proxy = start(&config);
    let ca_pem = ca.ca_path();
    let port = proxy.port;

    assert_eq!(verified(port, &ca_pem, "a.test").await, a.der, "a.test");
    assert_eq!(verified(port, &ca_pem, "www.a.test").await, a.der, "www.a.test");
    assert_eq!(verified(port, &ca_pem, "x.wild.test").await, wild.der, "wildcard");
    assert_eq!(
        verified(port, &ca_pem, "B.Test").await,
        b.der,
        "names are case-insensitive"
    );
    // `names` narrows b to b.test: other.test (in its SAN) is an unknown name now.
    assert_eq!(served(port, Some("other.test")).await, a.der, "other.test");
    // The first table is the default: no SNI, an unknown name, a name two
    // labels under a wildcard, and a wildcard's parent.
    assert_eq!(served(port, None).await, a.der, "no SNI");
    for unknown in ["unknown.test", "a.b.wild.test", "wild.test"] {
        assert_eq!(served(port, Some(unknown)).await, a.der, "{unknown}");
    }

    let (status, metrics) = common::plain_get(proxy.admin_port(), "/metrics").await;
    assert_eq!(status, 200);
    for (name, leaf) in [("a.test", &a), ("*.wild.test", &wild), ("b.test", &b)] {
        let line = format!(
            "tlsfront_certificate_expiry_timestamp_seconds{{name=\"{name}\"}} {}\n",
            leaf.not_after
        );
        assert!(metrics.contains(&line), "{line} missing in:\n{metrics}");
    }
    assert_eq!(
        metrics
            .matches("tlsfront_certificate_expiry_timestamp_seconds{")
            .count(),
        3,
        "{metrics}"
    );
}

#[tokio::test]
async fn tls_cert_stays_the_default_and_comes_before_the_tables() {
    let ca = TestCa::new();
    let single = ca.leaf("single", &["single.test"], 2031);
    let a = ca.leaf("a", &["a.test"], 2031);
    let config = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n{}",
        single.cert.display().to_string(),
        single.key.display().to_string(),
        table(&a, None)
    );
    let proxy = start(&config);
    assert_eq!(served(proxy.port, None).await, single.der, "no SNI");
    assert_eq!(served(proxy.port, Some("unknown.test")).await, single.der, "unknown");
    assert_eq!(verified(proxy.port, &ca.ca_path(), "single.test").await, single.der);
    assert_eq!(verified(proxy.port, &ca.ca_path(), "a.test").await, a.der);
}

#[tokio::test]
async fn development_certificate_covers_only_what_the_tables_do_not() {
    let ca = TestCa::new();
    let a = ca.leaf("a", &["a.test"], 2031);
    // Default self_signed_hosts (localhost, 127.0.0.1, ::1): localhost is
    // not covered by a.test, so the development certificate is made for it.
    let proxy = start(&table(&a, None));
    let dev = verified(proxy.port, &proxy.ca(), "localhost").await;
    assert_ne!(dev, a.der);
    assert_eq!(served(proxy.port, None).await, a.der, "the table stays the default");
    assert_eq!(verified(proxy.port, &ca.ca_path(), "a.test").await, a.der);
}

/// Waits (bounded) until `sni` is served `want`.
async fn wait_served(port: u16, sni: &str, want: &[u8], proxy: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while served(port, Some(sni)).await != want {
        assert!(
            Instant::now() < deadline,
            "{sni}: new certificate not served; log:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn replacing_one_pair_swaps_only_it_and_a_mismatched_pair_keeps_the_old_one() {
    let ca = TestCa::new();
    let a = ca.leaf("a", &["a.test"], 2031);
    let b = ca.leaf("b", &["b.test"], 2031);
    let proxy = start(&format!("{}{}", table(&a, None), table(&b, None)));
    let port = proxy.port;
    assert_eq!(served(port, Some("a.test")).await, a.der);
    assert_eq!(served(port, Some("b.test")).await, b.der);

    // A renewed a.test, written over the old files.
    let renewed = ca.leaf("renewed", &["a.test"], 2035);
    std::fs::copy(&renewed.key, &a.key).unwrap();
    std::fs::copy(&renewed.cert, &a.cert).unwrap();
    wait_served(port, "a.test", &renewed.der, &proxy).await;
    assert_eq!(served(port, Some("b.test")).await, b.der, "b.test must not change");
    assert_eq!(
        served(port, None).await,
        renewed.der,
        "the default is the renewed first table"
    );

    // A certificate whose key is another's: rejected, the renewed one stays.
    let stranger = ca.leaf("stranger", &["a.test"], 2036);
    std::fs::copy(&stranger.cert, &a.cert).unwrap();
    let log = proxy.wait_for_log("rejected", Duration::from_secs(10));
    let line = log.lines().find(|l| l.contains("rejected")).unwrap();
    assert!(
        line.contains(&a.key.display().to_string()) && line.contains("cannot be used with the certificate"),
        "the log line must name the key and say why: {line}"
    );
    for _ in 0..3 {
        assert_eq!(
            served(port, Some("a.test")).await,
            renewed.der,
            "old pair keeps serving"
        );
        assert_eq!(served(port, Some("b.test")).await, b.der);
    }
    // Fixed on disk: served again by the next reload.
    std::fs::copy(&stranger.key, &a.key).unwrap();
    wait_served(port, "a.test", &stranger.der, &proxy).await;
}

fn check(dir: &Path, config: &str) -> (Option<i32>, String, String) {
    let file = dir.join("check.toml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tlsfront"))
        .args(["check", "-c"])
        .arg(&file)
        .current_dir(dir)
        .env_remove("TLSFRONT_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_reports_certificate_problems_with_file_line_and_key() {
    let ca = TestCa::new();
    let dir = ca.dir.path();
    let a = ca.leaf("a", &["a.test", "www.a.test"], 2031);
    let b = ca.leaf("b", &["b.test", "www.a.test"], 2031);
    let wild = ca.leaf("wild", &["*.wild.test"], 2031);

    let (code, stdout, stderr) = check(dir, &format!("{}{}", table(&a, None), table(&wild, None)));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!(
            "# certificate tls.certificate[0]: {} for a.test, www.a.test, the default",
            a.cert.display()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("[[tls.certificate]]"), "{stdout}");

    let mismatched = format!(
        "{}\n[[tls.certificate]]\ncert = {:?}\nkey = {:?}\n",
        table(&a, None),
        wild.cert.display().to_string(),
        b.key.display().to_string()
    );
    let uncovered = table(&a, Some(&["a.test", "b.test"]));
    let duplicate = format!("{}{}", table(&a, None), table(&b, None));
    let duplicate_listed = format!("{}{}", table(&a, None), table(&b, Some(&["b.test", "WWW.a.test"])));
    let missing = table(
        &Leaf {
            cert: dir.join("nope.pem"),
            key: a.key.clone(),
            der: Vec::new(),
            not_after: 0,
        },
        None,
    );
    let cases: [(&str, String, Vec<String>); 5] = [
        (
            "mismatched pair",
            mismatched,
            vec![
                "at line 8, column 7".into(),
                "key `tls.certificate[1].key`".into(),
                b.key.display().to_string(),
                "cannot be used with the certificate".into(),
            ],
        ),
        (
            "name not covered",
            uncovered,
            vec![
                "at line 5, column 20".into(),
                "key `tls.certificate[0].names[1]`".into(),
                "\"b.test\" is not covered".into(),
                "a.test, www.a.test".into(),
            ],
        ),
        (
            "duplicate from the certificates' names",
            duplicate,
            vec![
                "at line 7, column 8".into(),
                "key `tls.certificate[1].cert`".into(),
                "\"www.a.test\" is also chosen by tls.certificate[0]".into(),
            ],
        ),
        (
            "duplicate from names",
            duplicate_listed,
            vec![
                "at line 9, column 20".into(),
                "key `tls.certificate[1].names[1]`".into(),
                "\"www.a.test\" is also chosen by tls.certificate[0]".into(),
            ],
        ),
        (
            "missing file",
            missing,
            vec![
                "at line 3, column 8".into(),
                "key `tls.certificate[0].cert`".into(),
                "nope.pem".into(),
                "cannot read".into(),
            ],
        ),
    ];
    for (what, config, needles) in cases {
        let (code, _, stderr) = check(dir, &config);
        assert_eq!(code, Some(2), "{what}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: one line: {stderr}");
        assert!(stderr.contains("check.toml"), "{what}: {stderr}");
        for needle in needles {
            assert!(stderr.contains(&needle), "{what}: {needle:?} missing in {stderr}");
        }
    }
}
