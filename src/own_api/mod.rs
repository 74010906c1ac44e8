//! The gateway's own API: everything under `/.wardgate/` that the gateway answers itself, never
//! routed and never proxied. [`paths`] is its table of paths; `pipeline/own_api.rs` hands these
//! requests to the [`pages`] (HTML forms for browsers) or to the JSON API ([`login_api`],
//! [`enroll_api`], with [`json`]). The state machines behind both are in `auth/`, which knows
//! nothing of HTTP requests.

pub mod access_api;
pub mod enroll_api;
pub mod json;
pub mod login_api;
pub mod pages;
pub mod paths;
