//! The subcommands, composed from the library's parts. `main.rs` only maps
//! the result to an exit code.

use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use crate::certificates::{CertificateError, CertificateSet};
use crate::cli::{CertArgs, CheckArgs, Cli, Command, DoctorArgs, HealthArgs, RunArgs};
use crate::config::{self, Config, ConfigError, LogFormat, LogLevel, ServerUrl, Source};
use crate::reload::{self, Fingerprint};
use crate::server::{self, Loaded, Loader, ServerError};
use crate::tls::{self, TlsError};

/// Writes a command's report to standard output. A reader that went away
/// (`tlsfront check | head`) ends the report, not the process: `println!`
/// panics on a closed pipe. Any other write error is said on stderr.
fn to_stdout(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    if let Err(e) = std::io::stdout().write_fmt(text) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("tlsfront: cannot write to standard output: {e}");
        }
    }
}

/// `println!` through [`to_stdout`].
macro_rules! say {
    () => {
        to_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        to_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Why a command failed; decides the exit code.
#[derive(Debug)]
pub enum AppError {
    /// Invalid configuration or command-line value (exit 2).
    Config(ConfigError),
    /// Unusable certificate or key (exit 2).
    Tls(TlsError),
    /// A listener could not be opened (exit 1).
    Server(ServerError),
    /// Anything else at run time (exit 1).
    Runtime(String),
    /// `doctor` found errors (exit 1, the report says what).
    Findings,
    /// `health` did not get a 200: exit 1 when the endpoint answered (e.g.
    /// 503 while shutting down), 3 when nothing answered, 2 for a bad `--url`.
    Health {
        /// The URL asked.
        url: String,
        /// What went wrong.
        error: crate::health::HealthError,
    },
}

impl AppError {
    /// 2 for bad input (config, certificates), 1 for failures at run time;
    /// `health` adds 3 for an admin endpoint that did not answer at all.
    pub fn exit_code(&self) -> u8 {
        use crate::health::HealthError;
        match self {
            AppError::Config(_) | AppError::Tls(_) => 2,
            AppError::Server(_) | AppError::Runtime(_) | AppError::Findings => 1,
            AppError::Health { error, .. } => match error {
                HealthError::Unhealthy(_) => 1,
                HealthError::InvalidUrl(_) => 2,
                HealthError::Unreachable(_) => 3,
            },
        }
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Config(e) => e.fmt(f),
            AppError::Tls(e) => write!(f, "certificate problem: {e}"),
            AppError::Server(e) => e.fmt(f),
            AppError::Runtime(e) => f.write_str(e),
            AppError::Findings => f.write_str("doctor found problems that break sessions or security (see above)"),
            AppError::Health { url, error } => match error {
                crate::health::HealthError::Unhealthy(_) => write!(f, "unhealthy: {url}: {error}"),
                crate::health::HealthError::Unreachable(_) => write!(f, "unreachable: {url}: {error}"),
                crate::health::HealthError::InvalidUrl(_) => write!(f, "{url}: {error}"),
            },
        }
    }
}

impl std::error::Error for AppError {}

impl From<ConfigError> for AppError {
    fn from(e: ConfigError) -> Self {
        AppError::Config(e)
    }
}

impl From<CertificateError> for AppError {
    fn from(e: CertificateError) -> Self {
        match e {
            CertificateError::Config(e) => AppError::Config(e),
            CertificateError::Tls(e) => AppError::Tls(e),
        }
    }
}

impl From<TlsError> for AppError {
    fn from(e: TlsError) -> Self {
        AppError::Tls(e)
    }
}

/// Runs the command the user asked for.
pub fn main(cli: Cli) -> Result<(), AppError> {
    match cli.command {
        None => run(cli.run),
        Some(Command::Run(args)) => run(args),
        Some(Command::Check(args)) => check(args),
        Some(Command::Cert(args)) => cert(args),
        Some(Command::Health(args)) => health(args),
        Some(Command::Doctor(args)) => doctor(args),
    }
}

/// The config file (or defaults) with the command-line overrides applied.
pub fn effective_config(args: &RunArgs) -> Result<(Config, Source), ConfigError> {
    let (mut config, source) = config::load(args.config.as_deref())?;
    let flag_error = |flag: &str, message: String| ConfigError {
        source: "the command line".into(),
        position: None,
        key: Some(flag.to_string()),
        message,
    };
    if let Some(listen) = &args.listen {
        config.listen.https = config::parse_socket_addr(listen).map_err(|m| flag_error("--listen", m))?;
    }
    if let Some(upstream) = &args.upstream {
        let url = ServerUrl::parse(upstream.trim()).map_err(|m| flag_error("--upstream", m))?;
        config.upstream.set_server(url);
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        config.tls.cert = Some(cert.clone());
        config.tls.key = Some(key.clone());
    }
    config.validate(&source.to_string())?;
    Ok((config, source))
}

fn run(args: RunArgs) -> Result<(), AppError> {
    let (config, source) = effective_config(&args)?;
    init_logging(config.log.level, config.log.format);
    tracing::info!("configuration: {source}");
    // Open ACME challenges outlive generations: an order spans reloads.
    let challenges = Arc::new(crate::acme::Challenges::default());
    let initial = prepare_tls(&config, &source.to_string(), true, &challenges)?.into_loaded(config);
    // A reload repeats exactly this: same file, same command-line overrides.
    let loader_challenges = challenges.clone();
    let loader: Loader = Box::new(move || {
        let (config, source) = effective_config(&args).map_err(|e| e.to_string())?;
        let prepared =
            prepare_tls(&config, &source.to_string(), false, &loader_challenges).map_err(|e| e.to_string())?;
        Ok(prepared.into_loaded(config))
    });
    // One usable CPU (a pinned container, the benchmark): a current-thread
    // runtime skips the work-stealing machinery. Otherwise one worker per CPU.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cpus)
            .enable_all()
            .build()
    }
    .map_err(|e| AppError::Runtime(format!("cannot start the runtime: {e}")))?;
    runtime
        .block_on(server::run(initial, loader, challenges))
        .map_err(AppError::Server)
}

/// Loads the configured certificates, and reuses / generates the
/// development ones when `tls.cert` is unset (see [`crate::certificates`]).
fn prepare_tls(
    config: &Config,
    source: &str,
    announce: bool,
    challenges: &Arc<crate::acme::Challenges>,
) -> Result<PreparedTls, AppError> {
    // The configured files' state before they are read: a renewal landing
    // while they are read is still a change for the watcher.
    let configured: Vec<PathBuf> = config
        .tls
        .cert
        .iter()
        .chain(config.tls.key.iter())
        .chain(config.tls.certificates.iter().flat_map(|c| [&c.cert, &c.key]))
        .cloned()
        .collect();
    let before = reload::fingerprint(&configured);
    let set = CertificateSet::load(config, source, &route_hosts(config), announce)?;
    let tls = set.server_config(
        config.tls.min_version,
        &config.tls.key_exchange,
        config.acme.active().then(|| challenges.clone()),
    )?;
    let client_sites = set.client_auth_sites(config, &tls, config.acme.active().then(|| challenges.clone()))?;
    if announce {
        for name in &config.acme.names {
            if set.acme_missing.contains(name) {
                tracing::info!(
                    "{name}: no certificate yet; ordering it in the background (handshakes for it fail until then)"
                );
            } else {
                tracing::info!(
                    "{name}: serving the certificate stored in {}",
                    config.acme.storage_dir().display()
                );
            }
        }
    }
    let mut watch = set.watch();
    // Client CAs and revocation lists are read again when they change, too.
    let t = &config.tls;
    for file in [&t.client_ca, &t.client_crl]
        .into_iter()
        .chain(
            t.certificates
                .iter()
                .flat_map(|e| e.client.iter().flat_map(|c| [&c.ca, &c.crl])),
        )
        .flatten()
    {
        if !watch.contains(file) {
            watch.push(file.clone());
        }
    }
    let seen = watch
        .iter()
        .zip(reload::fingerprint(&watch))
        .map(|(path, now)| configured.iter().position(|c| c == path).map_or(now, |i| before[i]))
        .collect();
    Ok(PreparedTls {
        tls,
        client_sites,
        watch,
        seen,
        dev_ca: set.dev_ca.clone(),
        certificate_expiry: set.expiry(),
        acme_missing: set.acme_missing.clone(),
    })
}

/// Route hosts that need a development certificate of their own (exact and
/// wildcard hosts; a development certificate is only made when `tls.cert`
/// is unset and no `[[tls.certificate]]` covers the name).
fn route_hosts(config: &Config) -> Vec<String> {
    let mut hosts: Vec<String> = config
        .routes
        .iter()
        .filter_map(|r| r.host.as_ref().map(|h| h.to_string()))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

struct PreparedTls {
    tls: Arc<rustls::ServerConfig>,
    client_sites: Option<Arc<crate::tls::ClientAuthSites>>,
    watch: Vec<PathBuf>,
    seen: Fingerprint,
    dev_ca: Option<PathBuf>,
    certificate_expiry: Vec<(String, i64)>,
    acme_missing: Vec<String>,
}

impl PreparedTls {
    fn into_loaded(self, config: Config) -> Loaded {
        Loaded {
            config,
            tls: self.tls,
            client_sites: self.client_sites,
            watch: self.watch,
            seen: self.seen,
            dev_ca: self.dev_ca,
            certificate_expiry: self.certificate_expiry,
            acme_missing: self.acme_missing,
        }
    }
}

fn check(args: CheckArgs) -> Result<(), AppError> {
    let run_args = RunArgs {
        config: args.config,
        ..RunArgs::default()
    };
    let (config, source) = effective_config(&run_args)?;
    let certificates = CertificateSet::check(&config, &source.to_string())?;
    say!("# configuration OK: {source}");
    for (i, served) in certificates.served.iter().enumerate() {
        let names = if served.names.is_empty() {
            "any name".to_string()
        } else {
            served.names.join(", ")
        };
        let default = if i == 0 { ", the default" } else { "" };
        say!(
            "# certificate {}: {} for {names}{default}",
            served.origin,
            served.cert.display()
        );
    }
    if config.acme.active() {
        say!(
            "# acme: {} from {} ({}), stored in {}",
            config.acme.names.join(", "),
            config.acme.directory_url(),
            config
                .acme
                .usable_challenges(config.listen.http.is_some())
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            config.acme.storage_dir().display()
        );
    }
    if config.uses_dev_cert() {
        say!(
            "# no tls.cert/tls.key: a development certificate is generated into (or reused from) {} for the names no certificate covers",
            config.tls.self_signed_dir.display()
        );
    }
    if !config.routes.is_empty() {
        say!("# routes, in the order they are matched (the first that matches takes the request):");
        for (i, line) in crate::routes::describe(&config).iter().enumerate() {
            say!("#   {}. {line}", i + 1);
        }
        if !config.upstream.given {
            say!("#   a request no route takes: 421 if no route serves its host, else 404");
        }
    }
    // Apart from the route table (whose lines scripts read as they are).
    say!("# protection (compression, access, auth, rate_limit), per route:");
    for line in crate::routes::describe_protection(&config) {
        say!("#  - {line}");
    }
    say!("{config}");
    Ok(())
}

fn cert(args: CertArgs) -> Result<(), AppError> {
    let hosts = if args.hosts.is_empty() {
        config::Config::default().tls.self_signed_hosts
    } else {
        args.hosts
    };
    let dev = tls::generate_dev_certs(&args.out, &hosts)?;
    let ca_state = if dev.ca_reused { "reused" } else { "created" };
    say!("development CA ({ca_state}): {}", dev.ca.display());
    say!("certificate for {}: {}", hosts.join(", "), dev.cert.display());
    say!("private key (mode 0600): {}", dev.key.display());
    say!(
        "trust the CA, e.g.: curl --cacert {} https://localhost:8443/",
        dev.ca.display()
    );
    Ok(())
}

fn health(args: HealthArgs) -> Result<(), AppError> {
    let url = match args.url {
        Some(url) => url,
        None => {
            let run_args = RunArgs {
                config: args.config,
                ..RunArgs::default()
            };
            let (config, source) = effective_config(&run_args)?;
            let Some(addr) = config.admin.listen else {
                return Err(AppError::Config(ConfigError {
                    source: source.to_string(),
                    position: None,
                    key: Some("admin.listen".into()),
                    message:
                        "is empty: `tlsfront health` asks the admin endpoint; set [admin] listen = \"127.0.0.1:9901\""
                            .into(),
                }));
            };
            // A wildcard listener is asked on loopback.
            let ip = match addr.ip() {
                std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
                std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                ip => ip,
            };
            format!("http://{}/healthz", std::net::SocketAddr::new(ip, addr.port()))
        }
    };
    match crate::health::check(&url, std::time::Duration::from_secs(3)) {
        Ok(line) => {
            say!("healthy: {url}: {line}");
            Ok(())
        }
        Err(error) => Err(AppError::Health { url, error }),
    }
}

fn doctor(args: DoctorArgs) -> Result<(), AppError> {
    let run_args = RunArgs {
        config: args.config,
        upstream: args.upstream,
        ..RunArgs::default()
    };
    let (config, _) = effective_config(&run_args)?;
    if config.acme.active() && !args.json {
        say!("ACME certificates ({}):", config.acme.storage_dir().display());
        for line in crate::acme::state_lines(&config.acme) {
            say!("  {line}");
        }
        say!();
    }
    let public_url = args
        .public_url
        .unwrap_or_else(|| format!("https://localhost:{}", config.public_https_port()));
    let opts = crate::doctor::Options {
        upstream: config
            .upstream
            .servers()
            .first()
            .cloned()
            .unwrap_or_else(|| ServerUrl::parse("http://127.0.0.1:8000").expect("the default upstream is valid")),
        public_url,
        paths: args.paths,
        connect_timeout: config.upstream.connect_timeout,
        response_timeout: config.upstream.response_timeout.min(std::time::Duration::from_secs(15)),
        forms: !args.no_forms,
        compression: config.compression.enabled,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AppError::Runtime(format!("cannot start the runtime: {e}")))?;
    let report = runtime.block_on(crate::doctor::run(&opts)).map_err(|message| {
        AppError::Config(ConfigError {
            source: "the command line".into(),
            position: None,
            key: None,
            message,
        })
    })?;
    if args.json {
        say!("{}", crate::doctor::render_json(&report));
    } else {
        to_stdout(format_args!(
            "{}",
            crate::doctor::render_human(&report, std::io::stdout().is_terminal())
        ));
    }
    if report.has_errors() {
        Err(AppError::Findings)
    } else {
        Ok(())
    }
}

fn init_logging(level: LogLevel, format: LogFormat) {
    let filter = match level {
        LogLevel::Error => tracing::Level::ERROR,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Trace => tracing::Level::TRACE,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}
