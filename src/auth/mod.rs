//! Authentication: who may pass, and how they prove it.
//!
//! - [`password`]: password policy, argon2id hashing on a bounded pool.
//! - [`totp`]: the TOTP second factor (RFC 6238), with replay protection.
//! - [`lockout`]: brute-force protection (soft lock with growing back-off).
//! - [`enrollment`]: the JSON API where a new user turns the enrollment token into a password,
//!   an authenticator app and recovery codes.
//! - [`webauthn`]: the WebAuthn second factor (passkeys, security keys): registration and
//!   login ceremonies, user verification required, cloned-authenticator detection.
//!
//! The login flows that use them (browser pages, JSON API, WebAuthn) are the next step.

pub mod enrollment;
pub mod lockout;
pub mod password;
pub mod totp;
pub mod webauthn;
