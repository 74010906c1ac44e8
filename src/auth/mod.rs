//! Authentication: who may pass, and how they prove it.
//!
//! - [`password`]: password policy, argon2id hashing on a bounded pool.
//! - [`totp`]: the TOTP second factor (RFC 6238), with replay protection.
//! - [`lockout`]: brute-force protection (soft lock with growing back-off).
//! - [`mfa`]: which second factors an account may use, by role.
//! - [`webauthn`]: the WebAuthn second factor (passkeys, security keys): registration and
//!   login ceremonies, user verification required, cloned-authenticator detection.
//! - [`enrollment`]: where a new user turns the enrollment token into a password, an
//!   authenticator app or a passkey, and recovery codes (the JSON API and the pages are in
//!   [`crate::own_api`] and [`crate::own_api::pages`]).
//! - [`csrf`]: the anti-forgery checks of every form the gateway serves.
//! - [`return_to`]: which targets a browser may be sent to after logging in.
//!
//! - [`login`]: password, then second factor, then a session; step-up and logout.
//! - [`events`]: the one channel for security events.
//! - [`shared`]: what the login and enrollment steps share (busy, unavailable, store work).

pub mod csrf;
pub mod enrollment;
pub mod events;
pub mod lockout;
pub mod login;
pub mod mfa;
pub mod password;
pub mod return_to;
pub mod shared;
pub mod totp;
pub mod webauthn;
