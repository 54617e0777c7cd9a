//! tlsfront: a TLS-terminating reverse proxy that tells the app the truth.
//!
//! The binary is a thin shell over [`app`]; the request path is in
//! [`proxy`], its header policy in [`policy`], the I/O in [`server`],
//! [`upstream`] and [`tls`].
//!
//! # Layers
//!
//! Bottom to top. A module may use the modules of its own layer and of the
//! layers below it, never one above, and no files may import each other in
//! a circle. `tests/layers.rs` reads this table and every `crate::`,
//! `super::` and `self::` path in `src/`, and fails on an upward import or a
//! circle, so the table stays true.
//!
//! | layer | modules | what |
//! |---|---|---|
//! | 1 | `clock`, `request_path`, `config`, `proxy_protocol`, `htpasswd` | the ground: time, request paths, the validated configuration, the PROXY header and htpasswd parsers |
//! | 2 | `policy` | pure header policy over `http` types (forwarded, cookies, redirects, prefixes) |
//! | 3 | `metrics`, `access_log`, `telemetry`, `hints` | what tlsfront tells the operator |
//! | 4 | `tls`, `upstream`, `acme`, `certificates` | certificates and the client to the app |
//! | 5 | `routes`, `protect` | where a request goes, and who may reach the app |
//! | 6 | `connection`, `body`, `compress`, `proxy`, `park` | the life of one request, and of an idle connection |
//! | 7 | `admin`, `reload` | side services, each given a narrow view of the server |
//! | 8 | `server` | listeners, connections, generations, shutdown |
//! | 9 | `app`, `cli`, `doctor`, `health` | the face: commands and their output |

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod app;
pub mod body;
pub mod certificates;
pub mod cli;
pub mod clock;
pub mod compress;
pub mod config;
pub mod connection;
pub mod doctor;
pub mod health;
pub mod hints;
pub mod htpasswd;
pub mod metrics;
pub mod park;
pub mod policy;
pub mod protect;
pub mod proxy;
pub mod proxy_protocol;
pub mod reload;
pub mod request_path;
pub mod routes;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod upstream;
