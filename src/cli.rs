//! The command-line contract. Scripts and outside tests depend on these names.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A TLS-terminating reverse proxy that tells your app the truth.
#[derive(Debug, Parser)]
#[command(name = "tlsfront", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; without one, `run`.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `run`, accepted without the word `run`.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Run(RunArgs),
    /// Validate a config and print the effective settings (exit 2 when invalid).
    Check(CheckArgs),
    /// Write a development CA and a certificate signed by it.
    Cert(CertArgs),
    /// Ask a running tlsfront's admin endpoint whether it is healthy, for container health checks.
    ///
    /// Exit status: 0 healthy (200); 1 the endpoint answered something else
    /// (503 while shutting down); 2 no admin endpoint configured or an invalid
    /// --url; 3 no answer (connection refused or timed out, not HTTP).
    Health(HealthArgs),
    /// Check the app behind tlsfront for what breaks sessions and security behind a proxy, and how to fix it.
    Doctor(DoctorArgs),
}

/// `tlsfront [run]`
#[derive(Debug, Args, Default, Clone)]
pub struct RunArgs {
    /// Config file [default: $TLSFRONT_CONFIG, else config/tlsfront.toml if present, else built-in defaults]
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTPS listen address, overrides listen.https (e.g. 127.0.0.1:8443)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The app's URL, overrides upstream.url (e.g. http://127.0.0.1:5000)
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// PEM certificate chain, overrides tls.cert (needs --key)
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key, overrides tls.key (needs --cert)
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

/// `tlsfront check`
#[derive(Debug, Args, Clone)]
pub struct CheckArgs {
    /// Config file [default: as for run]
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `tlsfront cert`
#[derive(Debug, Args, Clone)]
pub struct CertArgs {
    /// A name or IP the certificate is for; repeat for several [default: localhost, 127.0.0.1, ::1]
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// Output directory
    #[arg(long, value_name = "DIR", default_value = "certs")]
    pub out: PathBuf,
}

/// `tlsfront health`
#[derive(Debug, Args, Clone)]
pub struct HealthArgs {
    /// Config file whose `admin.listen` is asked [default: as for run]
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Ask this URL instead, e.g. http://127.0.0.1:9901/healthz
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

/// `tlsfront doctor`
#[derive(Debug, Args, Clone)]
pub struct DoctorArgs {
    /// Config file [default: as for run]
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The app's URL, overrides upstream.url (e.g. http://127.0.0.1:5000)
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// The URL clients use [default: https://localhost:<public https port>]
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// A page to check; repeat for several [default: /]
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
    /// One JSON object instead of the report for people
    #[arg(long)]
    pub json: bool,
    /// Do not post login forms (by default each checked page's login form is posted once, with credentials that cannot log in)
    #[arg(long)]
    pub no_forms: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_shapes_parse() {
        let c = Cli::try_parse_from(["tlsfront", "--upstream", "http://127.0.0.1:5000"]).unwrap();
        assert!(c.command.is_none());
        assert_eq!(c.run.upstream.as_deref(), Some("http://127.0.0.1:5000"));
        let c = Cli::try_parse_from([
            "tlsfront",
            "run",
            "-c",
            "x.toml",
            "--listen",
            "127.0.0.1:1",
            "--cert",
            "a",
            "--key",
            "b",
        ])
        .unwrap();
        assert!(matches!(c.command, Some(Command::Run(ref r)) if r.cert.is_some() && r.listen.is_some()));
        let c = Cli::try_parse_from(["tlsfront", "check", "--config", "x.toml"]).unwrap();
        assert!(matches!(c.command, Some(Command::Check(_))));
        let c = Cli::try_parse_from(["tlsfront", "cert", "--host", "a", "--host", "b", "--out", "d"]).unwrap();
        assert!(matches!(c.command, Some(Command::Cert(ref a)) if a.hosts.len() == 2));
        assert!(Cli::try_parse_from(["tlsfront", "--cert", "a"]).is_err());
        let c = Cli::try_parse_from(["tlsfront", "health", "--url", "http://127.0.0.1:9901/healthz"]).unwrap();
        assert!(matches!(c.command, Some(Command::Health(_))));
        let c = Cli::try_parse_from(["tlsfront", "doctor", "--path", "/a", "--path", "/b", "--json"]).unwrap();
        assert!(matches!(c.command, Some(Command::Doctor(ref d)) if d.paths.len() == 2 && d.json && !d.no_forms));
        let c = Cli::try_parse_from(["tlsfront", "doctor", "--no-forms"]).unwrap();
        assert!(matches!(c.command, Some(Command::Doctor(ref d)) if d.no_forms));
    }
}
