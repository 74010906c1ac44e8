//! The gateway's own API: everything under `/.wardgate/` that the gateway answers itself, never
//! routed and never proxied. [`paths`] is its table of paths; `pipeline/own_api.rs` hands these
//! requests to the pages (`pages/`) and the JSON handlers.

pub mod paths;
