//! The subcommands, composed from the library's parts. `main.rs` only maps
//! the result to an exit code.

use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cli::{CertArgs, CheckArgs, Cli, Command, DoctorArgs, HealthArgs, RunArgs};
use crate::config::{self, Config, ConfigError, LogFormat, LogLevel, Source, UpstreamUrl};
use crate::server::{self, Loaded, Loader, ServerError};
use crate::tls::{self, TlsError};

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
        config.upstream.url = UpstreamUrl::parse(upstream.trim()).map_err(|m| flag_error("--upstream", m))?;
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
    let (tls, watch, dev_ca) = prepare_tls(&config, true)?;
    let initial = Loaded {
        config,
        tls,
        watch,
        dev_ca,
    };
    // A reload repeats exactly this: same file, same command-line overrides.
    let loader: Loader = Box::new(move || {
        let (config, _) = effective_config(&args).map_err(|e| e.to_string())?;
        let (tls, watch, dev_ca) = prepare_tls(&config, false).map_err(|e| e.to_string())?;
        Ok(Loaded {
            config,
            tls,
            watch,
            dev_ca,
        })
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
    runtime.block_on(server::run(initial, loader)).map_err(AppError::Server)
}

/// Loads the configured certificate, or reuses / generates the development
/// one. Returns the TLS config, the files to watch for changes and the
/// development CA (if one is used).
fn prepare_tls(config: &Config, announce: bool) -> Result<PreparedTls, TlsError> {
    match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => {
            let tls = tls::server_config(cert, key, config.tls.min_version)?;
            if announce {
                tracing::info!("certificate: {} (key {})", cert.display(), key.display());
            }
            Ok((tls, vec![cert.clone(), key.clone()], None))
        }
        _ => {
            let dev = tls::ensure_dev_certs(
                &config.tls.self_signed_dir,
                &config.tls.self_signed_hosts,
                config.tls.min_version,
            )?;
            let tls = tls::server_config(&dev.cert, &dev.key, config.tls.min_version)?;
            let dev_ca = dev.ca.exists().then(|| dev.ca.clone());
            if announce || dev.leaf_generated {
                let verb = if dev.leaf_generated { "generated" } else { "reusing" };
                tracing::info!(
                    "{verb} development certificate {} for {}, signed by the development CA {} (trust that CA in your browser or client)",
                    dev.cert.display(),
                    config.tls.self_signed_hosts.join(", "),
                    dev.ca.display(),
                );
            }
            Ok((tls, vec![dev.cert, dev.key], dev_ca))
        }
    }
}

type PreparedTls = (Arc<rustls::ServerConfig>, Vec<PathBuf>, Option<PathBuf>);

fn check(args: CheckArgs) -> Result<(), AppError> {
    let run_args = RunArgs {
        config: args.config,
        ..RunArgs::default()
    };
    let (config, source) = effective_config(&run_args)?;
    if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
        tls::server_config(cert, key, config.tls.min_version)?;
    }
    println!("# configuration OK: {source}");
    if config.uses_dev_cert() {
        println!(
            "# no tls.cert/tls.key: a development certificate is generated into (or reused from) {}",
            config.tls.self_signed_dir.display()
        );
    }
    println!("{config}");
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
    println!("development CA ({ca_state}): {}", dev.ca.display());
    println!("certificate for {}: {}", hosts.join(", "), dev.cert.display());
    println!("private key (mode 0600): {}", dev.key.display());
    println!(
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
            println!("healthy: {url}: {line}");
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
    let public_url = args
        .public_url
        .unwrap_or_else(|| format!("https://localhost:{}", config.public_https_port()));
    let opts = crate::doctor::Options {
        upstream: config.upstream.url.clone(),
        public_url,
        paths: args.paths,
        connect_timeout: config.upstream.connect_timeout,
        response_timeout: config.upstream.response_timeout.min(std::time::Duration::from_secs(15)),
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
        println!("{}", crate::doctor::render_json(&report));
    } else {
        print!(
            "{}",
            crate::doctor::render_human(&report, std::io::stdout().is_terminal())
        );
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
