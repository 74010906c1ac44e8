//! Integration tests: the real gateway over real TLS with real clients, against in-process
//! mock upstreams. One test binary, several modules.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod access_pages;
mod accounts;
mod audit;
mod auth_hardening;
mod binary;
mod browser;
mod config_files;
mod enrollment;
mod fhir;
mod hardening;
mod harness;
mod hygiene;
mod injection;
mod policy;
mod proxying;
mod replicas;
mod sanitizing;
mod sessions;
mod smuggling;
mod structure;
mod totp;
mod upstream_tls;
