//! Automatic certificates against a real ACME server: Let's Encrypt's
//! pebble and pebble-challtestsrv (Debian package `pebble`), started here on
//! loopback ports, with pebble's validation ports pointed at tlsfront's
//! listeners and challtestsrv answering every DNS question with 127.0.0.1.
//! pebble's own HTTPS certificate is made here and given to tlsfront as
//! `acme.directory_ca`; issued chains are checked against pebble's root,
//! fetched from its management interface.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Proxy, RefusingAddr};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A loopback port for a server this test starts next (pebble, its
/// challenge server, tlsfront), held for it. A port that is merely free right
/// now can be taken meanwhile by the other tests running at the same time:
/// their outgoing connections take source ports from the same range, and
/// the server then fails to bind (CI saw it). So the port is left in
/// TIME_WAIT (the side that closes first keeps it ~60 s): the kernel hands
/// it out neither to `bind(0)` nor to an outgoing connection, while a
/// server that sets SO_REUSEADDR (tokio and Go listeners do) binds it.
fn free_port() -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    drop(accepted);
    // Its end of stream: the accepted side has closed first.
    let _ = std::io::Read::read(&mut client, &mut [0u8; 1]);
    addr.port()
}

/// pebble + challtestsrv, killed on drop.
struct Pebble {
    pebble: Option<Child>,
    challtest: Child,
    dir: tempfile::TempDir,
    port: u16,
    management: u16,
    dns: u16,
    http_port: u16,
    tls_port: u16,
    log: Arc<Mutex<String>>,
    eab: bool,
}

/// The external account pebble is given when EAB is required.
const EAB_KID: &str = "kid-1";
const EAB_KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";

impl Pebble {
    /// Validates http-01 on `http_port` and tls-alpn-01 on `tls_port`.
    fn start(http_port: u16, tls_port: u16) -> Pebble {
        Pebble::start_with(http_port, tls_port, false)
    }

    /// As [`Pebble::start`]; with `eab`, accounts need external account binding.
    fn start_with(http_port: u16, tls_port: u16, eab: bool) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        // pebble's HTTPS certificate, from a CA tlsfront is told to trust.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pebble test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf_params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).unwrap();
        let dns = free_port();
        let challtest = Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-management",
                &format!("127.0.0.1:{}", free_port()),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (apt-get install pebble; scripts/test.sh does)");
        let mut p = Pebble {
            pebble: None,
            challtest,
            dir,
            port: free_port(),
            management: free_port(),
            dns,
            http_port,
            tls_port,
            log: Arc::new(Mutex::new(String::new())),
            eab,
        };
        p.write_config();
        p.resume();
        p
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{}", self.port),
            "managementListenAddress": format!("127.0.0.1:{}", self.management),
            "certificate": d.join("cert.pem"),
            "privateKey": d.join("key.pem"),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": self.eab,
            "externalAccountMACKeys": { EAB_KID: EAB_KEY },
        }});
        std::fs::write(d.join("pebble.json"), config.to_string()).unwrap();
    }

    /// Starts pebble (again) and waits until its directory answers.
    fn resume(&mut self) {
        let mut child = Command::new("pebble")
            .args(["-config"])
            .arg(self.dir.path().join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns)])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pebble (apt-get install pebble; scripts/test.sh does)");
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = self.log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        self.pebble = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", self.management)).is_err()
        {
            assert!(Instant::now() < deadline, "pebble did not start; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops pebble (challtestsrv keeps running).
    fn stop(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// pebble's issuing root, from its management interface.
    async fn root(&self) -> CertificateDer<'static> {
        let connector = common::connector(&self.ca(), &[b"http/1.1"]);
        let tcp = TcpStream::connect(("127.0.0.1", self.management)).await.unwrap();
        let mut tls = connector
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(b"GET /roots/0 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response);
        let pem = &text[text.find("-----BEGIN CERTIFICATE-----").expect("a PEM root")..];
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().into_owned()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = self.challtest.kill();
        let _ = self.challtest.wait();
    }
}

/// A TLS handshake for `name` on `port`, verified against `root` only: the
/// served chain (leaf first) on success, the error otherwise.
async fn handshake(
    port: u16,
    name: &str,
    root: &CertificateDer<'static>,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(Arc::new(config)).connect(ServerName::try_from(name.to_string()).unwrap(), tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    Ok(tls
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.clone().into_owned())
        .collect())
}

/// Waits (bounded) until `name` is served with a chain to `root`.
async fn wait_for_certificate(
    proxy: &Proxy,
    pebble: &Pebble,
    name: &str,
    root: &CertificateDer<'static>,
) -> Vec<CertificateDer<'static>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match handshake(proxy.port, name, root).await {
            Ok(chain) => return chain,
            Err(e) => assert!(
                Instant::now() < deadline,
                "{name} not served within 60s ({e}); tlsfront log:\n{}\npebble log:\n{}",
                proxy.log(),
                pebble.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn config(pebble: &Pebble, storage: &Path, names: &[&str], challenges: &[&str], http: bool, extra: &str) -> String {
    let list = |items: &[&str]| items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    format!(
        "[listen]\nhttps = \"127.0.0.1:{}\"\n{}\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[acme]\nnames = [{}]\nemail = \"ops@example.com\"\ndirectory = \"{}\"\ndirectory_ca = {:?}\nchallenges = [{}]\nstorage = {:?}\n{extra}\n",
        pebble.tls_port,
        if http {
            format!("http = \"127.0.0.1:{}\"", pebble.http_port)
        } else {
            String::new()
        },
        list(names),
        pebble.directory(),
        pebble.ca().display().to_string(),
        list(challenges),
        storage.display().to_string(),
    )
}

fn metric(body: &str, line_start: &str) -> u64 {
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line_start} not in metrics:\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_certificate_is_obtained_stored_privately_and_reused_after_restart() {
    let (http_port, tls_port) = (free_port(), free_port());
    let pebble = Pebble::start(http_port, tls_port);
    let root = pebble.root().await;
    let storage = tempfile::tempdir().unwrap();
    let store = storage.path().join("acme");
    let name = "alpn.example.com";
    let toml = config(&pebble, &store, &[name], &["tls-alpn-01"], false, "");
    let proxy = Proxy::start_without_listen_flag(&toml, &[]);
    let chain = wait_for_certificate(&proxy, &pebble, name, &root).await;
    assert!(chain.len() >= 2, "leaf and intermediate are served");
    proxy.wait_for_log(
        &format!("{name}: certificate obtained, valid until"),
        Duration::from_secs(10),
    );
    // A name nobody configured gets no certificate of its own (nothing is
    // ordered for whatever SNI a client sends): the default certificate,
    // which is the ACME name's here, as for any unknown SNI. Seen with a
    // client that accepts any certificate.
    let leaf = common::served_leaf(proxy.port, Some("other.example.com"))
        .await
        .expect("unknown SNI gets the default certificate");
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let names: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .map(|san| san.value.general_names.iter().map(|n| n.to_string()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        [format!("DNSName({name})")],
        "the default is the ACME name's certificate"
    );
    assert_eq!(
        pebble.log().matches("Added order").count(),
        1,
        "one order, for {name} only"
    );
    let admin = proxy.admin_port();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = common::plain_get(admin, "/readyz").await;
        if !body.contains("certificates_missing") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readyz still lists the name: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = common::plain_get(admin, "/metrics").await;
    assert_eq!(metric(&metrics, "tlsfront_acme_orders_total{result=\"success\"}"), 1);
    assert!(
        metrics.contains(&format!(
            "tlsfront_certificate_expiry_timestamp_seconds{{name=\"{name}\"}}"
        )),
        "{metrics}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store), 0o700);
    let file = store.join(format!("certificates/{name}.pem"));
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&store.join("accounts")), 0o700);
    drop(proxy);

    // A restart serves the stored certificate at once, with no new order.
    let proxy = Proxy::start_without_listen_flag(&toml, &[]);
    proxy.wait_for_log(
        &format!("{name}: serving the certificate stored in"),
        Duration::from_secs(5),
    );
    let again = handshake(proxy.port, name, &root)
        .await
        .expect("stored certificate served at once");
    assert_eq!(again[0], chain[0], "the same leaf");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, metrics) = common::plain_get(proxy.admin_port(), "/metrics").await;
    assert_eq!(metric(&metrics, "tlsfront_acme_orders_total{result=\"success\"}"), 0);
    assert_eq!(metric(&metrics, "tlsfront_acme_orders_total{result=\"failure\"}"), 0);
    assert!(!proxy.log().contains("ordering a certificate"), "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_certificate_is_obtained_on_the_plain_listener() {
    let (http_port, tls_port) = (free_port(), free_port());
    let pebble = Pebble::start(http_port, tls_port);
    let root = pebble.root().await;
    let storage = tempfile::tempdir().unwrap();
    let name = "plain.example.com";
    let toml = config(&pebble, &storage.path().join("acme"), &[name], &["http-01"], true, "");
    let proxy = Proxy::start_without_listen_flag(&toml, &[]);
    let chain = wait_for_certificate(&proxy, &pebble, name, &root).await;
    assert!(!chain.is_empty());
    let log = proxy.wait_for_log(&format!("{name}: certificate obtained"), Duration::from_secs(10));
    assert!(
        pebble.log().contains(&format!(
            "Attempting to validate w/ HTTP: http://{name}:{http_port}/.well-known/acme-challenge/"
        )),
        "pebble validated over http-01:\n{}",
        pebble.log()
    );
    assert!(!log.contains("failed"), "{log}");
    // Everything else on the plain listener is still the redirect.
    let (status, _) = common::plain_get(http_port, "/.well-known/acme-challenge/unknown").await;
    assert_eq!(status, 308);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_ca_backs_off_refuses_the_name_then_recovers() {
    let (http_port, tls_port) = (free_port(), free_port());
    let mut pebble = Pebble::start(http_port, tls_port);
    let root = pebble.root().await;
    pebble.stop();
    let storage = tempfile::tempdir().unwrap();
    let name = "later.example.com";
    let toml = config(
        &pebble,
        &storage.path().join("acme"),
        &[name],
        &["tls-alpn-01"],
        false,
        "",
    );
    let proxy = Proxy::start_without_listen_flag(&toml, &[]);
    // Two failed attempts, the second after the first back-off.
    let log = proxy.wait_for_log_count("next attempt in", 2, Duration::from_secs(20));
    let failures: Vec<&str> = log.lines().filter(|l| l.contains("next attempt in")).collect();
    assert!(
        failures[0].contains(&format!("{name}: reaching the ACME directory and account failed")),
        "{log}"
    );
    assert!(
        failures[0].contains(&format!("check that {} is reachable", pebble.directory())),
        "{log}"
    );
    assert!(failures[0].contains("next attempt in 2s"), "{log}");
    assert!(failures[1].contains("next attempt in 10s"), "{log}");
    assert!(
        failures[0].contains("handshakes for this name fail until it has one"),
        "{log}"
    );
    // No certificate at all for the name meanwhile, not even the
    // development one (which would fail as UnknownIssuer): the server
    // ends the handshake itself.
    let err = handshake(proxy.port, name, &root)
        .await
        .expect_err("no certificate yet");
    assert!(
        err.contains("received fatal alert"),
        "the server did not end the handshake with an alert: {err}"
    );
    let (status, body) = common::plain_get(proxy.admin_port(), "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!("\"certificates_missing\":[\"{name}\"]")),
        "{body}"
    );
    let (_, metrics) = common::plain_get(proxy.admin_port(), "/metrics").await;
    assert!(metric(&metrics, "tlsfront_acme_orders_total{result=\"failure\"}") >= 2);
    // The CA comes back: the next attempt gets the certificate.
    pebble.resume();
    // pebble made a new root when it came back.
    let root = pebble.root().await;
    let chain = wait_for_certificate(&proxy, &pebble, name, &root).await;
    assert!(!chain.is_empty());
    let (status, body) = common::plain_get(proxy.admin_port(), "/readyz").await;
    assert!(!body.contains("certificates_missing"), "{status} {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_failure_keeps_serving_the_old_certificate() {
    let (http_port, tls_port) = (free_port(), free_port());
    let mut pebble = Pebble::start(http_port, tls_port);
    let root = pebble.root().await;
    let storage = tempfile::tempdir().unwrap();
    let store = storage.path().join("acme");
    let name = "renew.example.com";
    let toml = config(&pebble, &store, &[name], &["tls-alpn-01"], false, "");
    let proxy = Proxy::start_without_listen_flag(&toml, &[]);
    let first = wait_for_certificate(&proxy, &pebble, name, &root).await;
    // The CA goes away, and a reload makes renewal due at once.
    pebble.stop();
    let (_, leaf) = x509_parser::parse_x509_certificate(first[0].as_ref()).unwrap();
    let lifetime = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    let due = config(
        &pebble,
        &store,
        &[name],
        &["tls-alpn-01"],
        false,
        &format!("renew_before = \"{}s\"", lifetime - 1),
    );
    std::fs::write(proxy.dir.path().join("tlsfront.toml"), due).unwrap();
    proxy.signal("HUP");
    let log = proxy.wait_for_log("the current certificate keeps being served", Duration::from_secs(20));
    assert!(log.contains(&format!("{name}: renewing a certificate")), "{log}");
    let now = handshake(proxy.port, name, &root)
        .await
        .expect("old certificate still served");
    assert_eq!(now[0], first[0]);
    let (_, body) = common::plain_get(proxy.admin_port(), "/readyz").await;
    assert!(
        !body.contains("certificates_missing"),
        "a name with a certificate stays ready while its renewal fails: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_that_cannot_succeed_is_explained() {
    // pebble validates http-01 on a port nobody listens on (held bound, so
    // no other test can take it meanwhile).
    let refusing = RefusingAddr::new();
    let (dead_port, tls_port) = (refusing.addr.port(), free_port());
    let pebble = Pebble::start(dead_port, tls_port);
    let storage = tempfile::tempdir().unwrap();
    let name = "unreachable.example.com";
    // tlsfront's own plain listener is elsewhere.
    let mut toml = config(&pebble, &storage.path().join("acme"), &[name], &["http-01"], true, "");
    toml = toml.replace(&format!("127.0.0.1:{dead_port}"), &format!("127.0.0.1:{}", free_port()));
    let proxy = Proxy::start_without_listen_flag(&toml, &[]);
    let log = proxy.wait_for_log("next attempt in", Duration::from_secs(30));
    let line = log.lines().find(|l| l.contains("next attempt in")).unwrap();
    assert!(
        line.contains(&format!(
            "{name}: proving control of {name} with http-01 failed: the CA says"
        )),
        "{line}"
    );
    assert!(line.contains("(connection)"), "{line}");
    assert!(
        line.contains("port 80 (listen.http)") && line.contains("port is open"),
        "{line}"
    );
    let status_file = storage.path().join(format!("acme/status/{name}.error"));
    assert!(std::fs::read_to_string(status_file).unwrap().contains("http-01 failed"));
    // doctor reports the name's state from storage, with the explanation.
    let doctor = Command::new(env!("CARGO_BIN_EXE_tlsfront"))
        .args(["doctor", "--no-forms", "-c"])
        .arg(proxy.dir.path().join("tlsfront.toml"))
        .args(["--upstream", &format!("http://127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(report.contains(&format!("{name}: no certificate yet")), "{report}");
    assert!(
        report.contains("last failure (") && report.contains("with http-01 failed: the CA says"),
        "{report}"
    );
}

#[test]
fn check_rejects_a_name_with_two_certificate_sources_and_http_01_without_listener() {
    let dir = tempfile::tempdir().unwrap();
    let gen = Command::new(env!("CARGO_BIN_EXE_tlsfront"))
        .args(["cert", "--out"])
        .arg(dir.path().join("certs"))
        .args(["--host", "www.example.com"])
        .output()
        .unwrap();
    assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));
    let check = |toml: &str| {
        let path = dir.path().join("t.toml");
        std::fs::write(&path, toml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tlsfront"))
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout),
        )
    };
    let certs = dir.path().join("certs");
    let (code, out) = check(&format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n[acme]\nnames = [\"www.example.com\"]\n",
        certs.join("cert.pem").display().to_string(),
        certs.join("key.pem").display().to_string()
    ));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("acme.names[0]") && out.contains("also has a certificate from tls.cert"),
        "{out}"
    );
    let (code, out) = check("[acme]\nnames = [\"a.example.com\"]\nchallenges = [\"http-01\"]\n");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("acme.challenges") && out.contains("listen.http"), "{out}");
    // By default http-01 is simply not used without listen.http.
    let (code, out) = check("[acme]\nnames = [\"a.example.com\"]\n");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("# acme: a.example.com from https://acme-v02.api.letsencrypt.org/directory (tls-alpn-01)"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "storage = {:?}",
            dir.path().join("acme").display().to_string()
        )),
        "storage defaults beside the config: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_storage_order_each_name_once() {
    let (http_port, tls_port) = (free_port(), free_port());
    let pebble = Pebble::start(http_port, tls_port);
    let root = pebble.root().await;
    let storage = tempfile::tempdir().unwrap();
    let store = storage.path().join("acme");
    let names = ["one.example.com", "two.example.com"];
    let toml = config(&pebble, &store, &names, &["tls-alpn-01"], false, "");
    // Only the first is where pebble validates; when the second orders, the
    // first answers the CA from storage, as a replica behind a load
    // balancer would. Each starts with a different name (the second lists
    // them the other way round), so each orders exactly one, and finds the
    // other's in storage.
    let first = Proxy::start_without_listen_flag(&toml, &[]);
    let reversed = config(&pebble, &store, &[names[1], names[0]], &["tls-alpn-01"], false, "");
    let second_toml = reversed.replace(&format!("127.0.0.1:{tls_port}"), "127.0.0.1:0");
    let second = Proxy::start_with_args(&second_toml, &[]);
    for name in names {
        wait_for_certificate(&first, &pebble, name, &root).await;
        wait_for_certificate(&second, &pebble, name, &root).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let orders = pebble.log().matches("Added order").count();
    assert_eq!(
        orders,
        names.len(),
        "one order per name:\n{}\nfirst:\n{}\nsecond:\n{}",
        pebble.log(),
        first.log(),
        second.log()
    );
    for (which, proxy) in [("first", &first), ("second", &second)] {
        let (_, metrics) = common::plain_get(proxy.admin_port(), "/metrics").await;
        assert_eq!(
            metric(&metrics, "tlsfront_acme_orders_total{result=\"success\"}"),
            1,
            "{which} ordered exactly one name:\nfirst:\n{}\nsecond:\n{}",
            first.log(),
            second.log()
        );
        assert_eq!(metric(&metrics, "tlsfront_acme_orders_total{result=\"failure\"}"), 0);
    }
    assert!(!store.join("locks/one.example.com.lock").exists(), "locks are released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_renewal_under_load_drops_no_request() {
    let upstream = common::upstream::Upstream::start().await;
    let (http_port, tls_port) = (free_port(), free_port());
    let pebble = Pebble::start(http_port, tls_port);
    let root = pebble.root().await;
    let storage = tempfile::tempdir().unwrap();
    let store = storage.path().join("acme");
    let name = "busy.example.com";
    let with_upstream = |extra: &str| {
        config(&pebble, &store, &[name], &["tls-alpn-01"], false, extra).replace(
            "[admin]",
            &format!("[upstream]\nurl = \"http://{}\"\n\n[admin]", upstream.addr),
        )
    };
    let proxy = Proxy::start_without_listen_flag(&with_upstream(""), &[]);
    let first = wait_for_certificate(&proxy, &pebble, name, &root).await;
    let (_, leaf) = x509_parser::parse_x509_certificate(first[0].as_ref()).unwrap();
    let lifetime = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    // Due 3 s after each issuance: renewals one after another.
    std::fs::write(
        proxy.dir.path().join("tlsfront.toml"),
        with_upstream(&format!("renew_before = \"{}s\"", lifetime - 3)),
    )
    .unwrap();
    proxy.signal("HUP");
    let stop = Instant::now() + Duration::from_secs(12);
    let mut workers = Vec::new();
    for _ in 0..4 {
        let root = root.clone();
        let port = proxy.port;
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut leaves) = (0u32, Vec::new(), Vec::new());
            while Instant::now() < stop {
                match get_over_new_connection(port, name, &root).await {
                    Ok(leaf) => {
                        ok += 1;
                        if !leaves.contains(&leaf) {
                            leaves.push(leaf);
                        }
                    }
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed, leaves)
        }));
    }
    let (mut ok, mut failed, mut leaves) = (0, Vec::new(), Vec::new());
    for w in workers {
        let (o, f, l) = w.await.unwrap();
        ok += o;
        failed.extend(f);
        for leaf in l {
            if !leaves.contains(&leaf) {
                leaves.push(leaf);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests in 12 s");
    assert!(
        leaves.len() >= 3,
        "at least two renewals were served under load, saw {} certificates; log:\n{}",
        leaves.len(),
        proxy.log()
    );
    let (_, metrics) = common::plain_get(proxy.admin_port(), "/metrics").await;
    assert!(metric(&metrics, "tlsfront_acme_orders_total{result=\"success\"}") >= 3);
    println!("{ok} requests, 0 failed, {} certificates served", leaves.len());
}

/// One GET over a new TLS connection for `name`: the leaf it was served with.
async fn get_over_new_connection(port: u16, name: &str, root: &CertificateDer<'static>) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    tls.write_all(format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut response)).await;
    if !response.starts_with(b"HTTP/1.1 200") {
        return Err(format!(
            "response: {}",
            String::from_utf8_lossy(&response[..response.len().min(200)])
        ));
    }
    Ok(leaf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_account_binding_is_used_and_its_absence_explained() {
    let (http_port, tls_port) = (free_port(), free_port());
    let pebble = Pebble::start_with(http_port, tls_port, true);
    let root = pebble.root().await;
    let storage = tempfile::tempdir().unwrap();
    let name = "eab.example.com";
    // Without EAB the CA refuses the account, and the log says what to set.
    let without = config(
        &pebble,
        &storage.path().join("no-eab"),
        &[name],
        &["tls-alpn-01"],
        false,
        "",
    );
    let proxy = Proxy::start_without_listen_flag(&without, &[]);
    let log = proxy.wait_for_log("next attempt in", Duration::from_secs(20));
    let line = log.lines().find(|l| l.contains("next attempt in")).unwrap();
    assert!(
        line.contains("reaching the ACME directory and account failed"),
        "{line}"
    );
    assert!(
        line.contains("externalAccountRequired") && line.contains("acme.eab_kid"),
        "{line}"
    );
    drop(proxy);
    let with = config(
        &pebble,
        &storage.path().join("eab"),
        &[name],
        &["tls-alpn-01"],
        false,
        &format!("eab_kid = \"{EAB_KID}\"\neab_hmac_key = \"{EAB_KEY}\""),
    );
    let proxy = Proxy::start_without_listen_flag(&with, &[]);
    wait_for_certificate(&proxy, &pebble, name, &root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_new_name_orders_it_and_a_bad_change_is_rejected() {
    let (http_port, tls_port) = (free_port(), free_port());
    let pebble = Pebble::start(http_port, tls_port);
    let root = pebble.root().await;
    let storage = tempfile::tempdir().unwrap();
    let store = storage.path().join("acme");
    let toml = config(&pebble, &store, &["first.example.com"], &["tls-alpn-01"], false, "");
    let proxy = Proxy::start_without_listen_flag(&toml, &[]);
    let first = wait_for_certificate(&proxy, &pebble, "first.example.com", &root).await;
    // A bad [acme] change is rejected as any bad reload: nothing changes.
    let bad = config(&pebble, &store, &["*.example.com"], &["tls-alpn-01"], false, "");
    std::fs::write(proxy.dir.path().join("tlsfront.toml"), bad).unwrap();
    proxy.signal("HUP");
    proxy.wait_for_log("reload (SIGHUP) rejected", Duration::from_secs(10));
    assert!(proxy.log().contains("dns-01"), "{}", proxy.log());
    let both = config(
        &pebble,
        &store,
        &["first.example.com", "second.example.com"],
        &["tls-alpn-01"],
        false,
        "",
    );
    std::fs::write(proxy.dir.path().join("tlsfront.toml"), both).unwrap();
    proxy.signal("HUP");
    wait_for_certificate(&proxy, &pebble, "second.example.com", &root).await;
    let again = handshake(proxy.port, "first.example.com", &root).await.unwrap();
    assert_eq!(again[0], first[0], "the first name keeps its certificate, no new order");
    assert_eq!(pebble.log().matches("Added order").count(), 2, "{}", pebble.log());
}
