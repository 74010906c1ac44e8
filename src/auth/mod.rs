//! Authentication: who may pass, and how they prove it.
//!
//! - [`password`]: password policy, argon2id hashing on a bounded pool.
//! - [`totp`]: the TOTP second factor (RFC 6238), with replay protection.
//! - [`lockout`]: brute-force protection (soft lock with growing back-off).
//! - [`enrollment`]: where a new user turns the enrollment token into a password, an
//!   authenticator app and recovery codes (the JSON API here; the pages in [`crate::pages`]).
//! - [`csrf`]: the anti-forgery checks of every form the gateway serves.
//! - [`return_to`]: which targets a browser may be sent to after logging in.
//!
//! The login flows that use them (browser pages, JSON API, WebAuthn) are the next step.

pub mod csrf;
pub mod enrollment;
pub mod lockout;
pub mod password;
pub mod return_to;
pub mod totp;
