//! Request sanitization: refuse what is malformed, ambiguous or hostile before it reaches a back
//! end (DESIGN.md phases 3 and 4). Each rule answers with a fixed refusal and a stable code.
//!
//! - [`framing`]: the HTTP/1.1 byte stream, below hyper (smuggling, desync, sizes).
//! - [`request`]: the parsed request (host, path, method, body size, type and shape).
//! - [`injection`]: values in queries, forms and JSON bodies.
//! - [`config`]: the settings of these rules in the configuration file.

pub mod config;
pub mod framing;
pub mod injection;
pub mod request;
