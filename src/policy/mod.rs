//! Header policy: pure functions over `http` types. No I/O, no clocks, no
//! globals, so that unit tests and fuzzers can drive them directly.

pub mod client_cert;
pub mod cookies;
pub mod encoding;
pub mod forwarded;
pub mod headers;
pub mod hop;
pub mod prefix;
pub mod redirects;
