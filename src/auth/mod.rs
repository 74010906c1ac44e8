//! Authentication: who may pass, and how they prove it.
//!
//! - [`password`]: password policy, argon2id hashing on a bounded pool.
//! - [`totp`]: the TOTP second factor (RFC 6238), with replay protection.
//! - [`lockout`]: brute-force protection (soft lock with growing back-off).
//!
//! The login flows that use them (browser pages, JSON API, WebAuthn) are the next step.

pub mod lockout;
pub mod password;
pub mod totp;
