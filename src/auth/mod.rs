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
//! - [`login`]: password, then second factor, then a session; step-up and logout.
//! - [`events`]: the one channel for security events.
//! - [`api`]: what the JSON endpoints share.

pub mod api;
pub mod enrollment;
pub mod events;
pub mod lockout;
pub mod login;
pub mod password;
pub mod totp;
pub mod webauthn;
