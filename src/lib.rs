//! tlsfront: a TLS-terminating reverse proxy that tells the app the truth.
//!
//! The binary is a thin shell over [`app`]; the request path is in
//! [`proxy`], its header policy in [`policy`], the I/O in [`server`],
//! [`upstream`] and [`tls`].

pub mod app;
pub mod cli;
pub mod config;
pub mod policy;
pub mod proxy;
pub mod server;
pub mod tls;
pub mod upstream;
