//! Wardgate: a security gateway for healthcare APIs.
//!
//! The request path and its phases are in [`pipeline`]; start there.

pub mod access;
pub mod admin;
pub mod assertion;
pub mod audit;
pub mod auth;
pub mod body;
pub mod cli;
pub mod cli_audit;
mod cli_relations;
mod cli_user;
pub mod clock;
pub mod config;
pub mod deadlines;
pub mod demo;
pub mod hardening;
pub mod hook;
pub mod identity;
pub mod own_api;
pub mod path;
pub mod per_address;
pub mod pipeline;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod refusal;
pub mod refused;
pub mod route;
pub mod sanitize;
pub mod secret_file;
pub mod server;
pub mod session;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod units;
pub mod upkeep;
pub mod warning;
