//! Authentication: second factors and brute-force protection.

pub mod lockout;
pub mod totp;
