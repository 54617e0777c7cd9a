//! tlsfront: a TLS-terminating reverse proxy that tells the app the truth.
//!
//! The binary is a thin shell over [`app`]; the request path is in
//! [`proxy`], its header policy in [`policy`], the I/O in [`server`],
//! [`upstream`] and [`tls`].

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod app;
pub mod body;
pub mod certificates;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod health;
pub mod hints;
pub mod metrics;
pub mod park;
pub mod policy;
pub mod proxy;
pub mod proxy_protocol;
pub mod reload;
pub mod routes;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod upstream;
