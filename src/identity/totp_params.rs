//! What the store keeps of how a TOTP enrollment generates its codes, next to its sealed
//! secret: an enrollment keeps the parameters it was made with, so a later change of
//! `auth.totp` does not break the codes of apps already set up. The generator itself is in
//! `auth/totp.rs`.

use serde::{Deserialize, Serialize};

/// HMAC hash of the code generator. SHA-1 is the default: most authenticator apps ignore the
/// `algorithm` parameter and silently use SHA-1, so the others only suit known hardware tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TotpAlgorithm {
    #[default]
    #[serde(rename = "SHA1")]
    Sha1,
    #[serde(rename = "SHA256")]
    Sha256,
    #[serde(rename = "SHA512")]
    Sha512,
}

/// Code length: 6 (what every app shows) or 8 digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Digits {
    #[default]
    Six,
    Eight,
}

impl TryFrom<u8> for Digits {
    type Error = String;

    fn try_from(digits: u8) -> Result<Self, String> {
        match digits {
            6 => Ok(Self::Six),
            8 => Ok(Self::Eight),
            other => Err(format!("digits must be 6 or 8, not {other}")),
        }
    }
}

impl From<Digits> for u8 {
    fn from(digits: Digits) -> Self {
        match digits {
            Digits::Six => 6,
            Digits::Eight => 8,
        }
    }
}

/// How codes are generated for one enrollment; stored next to its secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotpParams {
    pub algorithm: TotpAlgorithm,
    pub digits: Digits,
    pub period_secs: u64,
}
