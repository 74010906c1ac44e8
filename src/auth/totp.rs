//! TOTP second factor: time-based one-time codes from an authenticator app.
//!
//! **The threat.** A stolen or guessed password alone must not open patient records. A second
//! factor answers that, but a weak one only moves the problem: a code that can be replayed
//! (shoulder-surfed, phished, read from a proxy log) or guessed in bulk is not a factor.
//!
//! **The rule.** A user enrolls by scanning a QR code (an `otpauth://` URI carrying a 160-bit
//! random secret); the factor becomes active only after the user proves the app holds the secret
//! by typing one correct code. At login a code is accepted for the current 30 s step and one step
//! on either side (clock drift, typing time), and **each step is accepted at most once**: the
//! caller stores `last_used_step` per user, a code whose step is not after it is refused as a
//! replay, and a success returns the new value to store. Codes are compared in constant time.
//! Guessing is throttled outside this module: the caller keys
//! [`crate::auth::lockout::Lockout`] by user for second-factor attempts and records every refusal
//! of [`ActiveTotp::verify`] (wrong code, malformed or replay) as a failure.
//!
//! ```text
//!   PendingTotp { secret }  ── activate(code, now) ok ──▶  ActiveTotp + last_used_step
//!          │                                                     │
//!          └── wrong code: stays pending                         └── verify(code, last, now)
//!                                                                     ok: new last_used_step
//! ```
//!
//! **The standard.** RFC 6238 (TOTP; section 5.2: one step of drift, a code used once), RFC 4226
//! section 4 (160-bit secrets) and section 7 (throttling, resynchronization window), NIST SP
//! 800-63B-4 (OTP authenticators: replay resistance, rate limiting), OWASP ASVS 5 V6.3.
//!
//! Time is a parameter (`now`, unix seconds); this module never reads the clock. Secrets never
//! appear in `Debug` output.

use std::fmt;

use rand::CryptoRng;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Builder, Totp};

pub use crate::identity::{Digits, TotpAlgorithm, TotpParams};
use crate::units::HumanDuration;

/// Secret length: 160 bits, as RFC 4226 section 4 recommends.
const SECRET_BYTES: usize = 20;

/// Steps of drift accepted on either side of the current one (RFC 6238 section 5.2).
const DRIFT_STEPS: u64 = 1;

/// Shortest and longest step the config accepts. Under 15 s users cannot type the code in time;
/// over 5 minutes a code observed over a shoulder stays good for too long.
const MIN_PERIOD_SECS: u64 = 15;
const MAX_PERIOD_SECS: u64 = 300;

/// Why a code or a setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    /// Not exactly the configured number of ASCII digits.
    #[error("the code is not {digits} digits")]
    Malformed { digits: u8 },
    /// Well formed, but matches none of the steps in the drift window.
    #[error("the code is wrong")]
    WrongCode,
    /// Matches a step at or before the last accepted one: a replay.
    #[error("the code was already used")]
    Replayed,
    /// Settings or account name that RFC 6238 / the Key URI format do not allow.
    #[error("invalid TOTP setting: {0}")]
    InvalidSetting(String),
    /// The enrollment QR code could not be drawn (the URI is too long for a QR code).
    #[error("the enrollment QR code could not be drawn")]
    QrCode,
}

impl From<totp_rs::TotpError> for TotpError {
    fn from(error: totp_rs::TotpError) -> Self {
        match error {
            // This one carries the URI, secret included: never let it reach a log.
            totp_rs::TotpError::UrlTooLong { .. } => Self::QrCode,
            other => Self::InvalidSetting(other.to_string()),
        }
    }
}

impl From<TotpAlgorithm> for Algorithm {
    fn from(algorithm: TotpAlgorithm) -> Self {
        match algorithm {
            TotpAlgorithm::Sha1 => Algorithm::SHA1,
            TotpAlgorithm::Sha256 => Algorithm::SHA256,
            TotpAlgorithm::Sha512 => Algorithm::SHA512,
        }
    }
}

/// The `auth: totp:` section of the config file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TotpConfig {
    /// Shown by the authenticator app next to the account name.
    pub issuer: String,
    pub algorithm: TotpAlgorithm,
    pub digits: Digits,
    /// Step length, whole seconds from 15s to 5m.
    pub period: HumanDuration,
}

impl Default for TotpConfig {
    fn default() -> Self {
        Self {
            issuer: "Wardgate".to_owned(),
            algorithm: TotpAlgorithm::Sha1,
            digits: Digits::Six,
            period: HumanDuration(std::time::Duration::from_secs(30)),
        }
    }
}

impl TotpConfig {
    /// The generator parameters, checked. An enrollment keeps its own copy, so that changing the
    /// config later does not break codes from apps that are already set up.
    pub fn params(&self) -> Result<TotpParams, TotpError> {
        let period = self.period.0;
        let secs = period.as_secs();
        if period.subsec_nanos() != 0 || !(MIN_PERIOD_SECS..=MAX_PERIOD_SECS).contains(&secs) {
            return Err(TotpError::InvalidSetting(format!(
                "period must be whole seconds from {MIN_PERIOD_SECS}s to {MAX_PERIOD_SECS}s, not {}",
                self.period
            )));
        }
        if self.issuer.is_empty() || self.issuer.contains(':') {
            return Err(TotpError::InvalidSetting(
                "issuer must be non-empty and without `:`".to_owned(),
            ));
        }
        Ok(TotpParams {
            algorithm: self.algorithm,
            digits: self.digits,
            period_secs: secs,
        })
    }
}

impl TotpParams {
    /// A generator for `secret`, validated by totp-rs (secret of at least 128 bits, period not 0).
    fn generator(&self, secret: Vec<u8>, issuer: &str, account: &str) -> Result<Totp, TotpError> {
        Ok(Builder::new()
            .with_algorithm(self.algorithm.into())
            .with_digits(self.digits.into())
            .with_step_duration(self.period_secs)
            .with_secret(secret)
            .with_issuer((!issuer.is_empty()).then_some(issuer))
            .with_account_name(account)
            .build()?)
    }
}

/// An enrollment in progress: the secret has been shown to the user, not yet confirmed.
/// Serializable, to be kept in the ephemeral store between the two steps.
#[derive(Clone, serde::Serialize, Deserialize)]
pub struct PendingTotp {
    params: TotpParams,
    totp: Totp,
}

impl PendingTotp {
    /// Starts an enrollment for `account` with a fresh 160-bit secret drawn from `rng`.
    pub fn new(
        config: &TotpConfig,
        account: &str,
        rng: &mut impl CryptoRng,
    ) -> Result<Self, TotpError> {
        let params = config.params()?;
        if account.is_empty() || account.contains(':') {
            return Err(TotpError::InvalidSetting(
                "account name must be non-empty and without `:`".to_owned(),
            ));
        }
        let mut secret = vec![0u8; SECRET_BYTES];
        rng.fill_bytes(&mut secret);
        let totp = params.generator(secret, &config.issuer, account)?;
        Ok(Self { params, totp })
    }

    /// The `otpauth://totp/Issuer:account?secret=...&issuer=...` URI the app imports.
    pub fn otpauth_uri(&self) -> Result<String, TotpError> {
        Ok(self.totp.to_url()?)
    }

    /// The URI as a QR code, PNG bytes, for the enrollment page.
    pub fn qr_png(&self) -> Result<Vec<u8>, TotpError> {
        Ok(self.totp.to_qr_png()?)
    }

    /// The secret in base32, for users who type it into the app instead of scanning.
    pub fn secret_base32(&self) -> String {
        self.totp.secret().to_base32()
    }

    /// The code an authenticator app shows at `now`, for tests of the callers.
    #[cfg(test)]
    pub(crate) fn code_at(&self, now: u64) -> String {
        self.totp.generate(now).to_string()
    }

    /// Confirms the enrollment with the first code from the app. On success the factor is active
    /// and the returned step is the caller's first `last_used_step`, so that the enrollment code
    /// cannot be replayed at login. A wrong code leaves `self` pending for another try.
    pub fn activate(&self, code: &str, now: u64) -> Result<(ActiveTotp, u64), TotpError> {
        let active = ActiveTotp {
            params: self.params,
            totp: self.totp.clone(),
        };
        let step = active.verify(code, 0, now)?;
        Ok((active, step))
    }
}

impl fmt::Debug for PendingTotp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingTotp")
            .field("params", &self.params)
            .field("account", &self.totp.account_name())
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A confirmed second factor.
#[derive(Clone)]
pub struct ActiveTotp {
    params: TotpParams,
    totp: Totp,
}

impl ActiveTotp {
    /// Rebuilds a factor from storage ([`Self::params`] and [`Self::secret_bytes`]).
    pub fn restore(params: TotpParams, secret: &[u8]) -> Result<Self, TotpError> {
        let totp = params.generator(secret.to_vec(), "", "")?;
        Ok(Self { params, totp })
    }

    pub fn params(&self) -> TotpParams {
        self.params
    }

    /// The raw secret, for the store to encrypt at rest. Never log it.
    pub fn secret_bytes(&self) -> &[u8] {
        self.totp.secret().as_bytes()
    }

    /// Checks `code` at `now` (unix seconds) against the current step and one on either side.
    /// `last_used_step` is the value this function last returned for the user, 0 if none (step 0,
    /// the first period of 1970, is thus never accepted: no clock in service reads it).
    /// On success returns the matched step: store it as the new `last_used_step`.
    pub fn verify(&self, code: &str, last_used_step: u64, now: u64) -> Result<u64, TotpError> {
        let digits = self.params.digits;
        if code.len() != usize::from(u8::from(digits)) || !code.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(TotpError::Malformed {
                digits: digits.into(),
            });
        }
        let period = self.params.period_secs;
        let current = now / period;
        // Every step of the window is computed and compared, so the time taken does not say which
        // step (if any) matched.
        let mut fresh = None;
        let mut replayed = false;
        for step in current.saturating_sub(DRIFT_STEPS)..=current.saturating_add(DRIFT_STEPS) {
            let Some(at) = step.checked_mul(period) else {
                continue;
            };
            let expected = self.totp.generate(at).to_string();
            if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
                if step > last_used_step {
                    fresh = fresh.or(Some(step));
                } else {
                    replayed = true;
                }
            }
        }
        match fresh {
            Some(step) => Ok(step),
            None if replayed => Err(TotpError::Replayed),
            None => Err(TotpError::WrongCode),
        }
    }
}

impl fmt::Debug for ActiveTotp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActiveTotp")
            .field("params", &self.params)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(6238)
    }

    fn pending() -> PendingTotp {
        PendingTotp::new(&TotpConfig::default(), "alice@clinic.example", &mut rng()).unwrap()
    }

    fn code_at(totp: &ActiveTotp, time: u64) -> String {
        totp.totp.generate(time).to_string()
    }

    fn active() -> ActiveTotp {
        let pending = pending();
        ActiveTotp::restore(pending.params, pending.totp.secret().as_bytes()).unwrap()
    }

    #[test]
    fn rfc6238_appendix_b_vectors() {
        let seeds = [
            (TotpAlgorithm::Sha1, &b"12345678901234567890"[..]),
            (TotpAlgorithm::Sha256, b"12345678901234567890123456789012"),
            (
                TotpAlgorithm::Sha512,
                b"1234567890123456789012345678901234567890123456789012345678901234",
            ),
        ];
        // (time, SHA1, SHA256, SHA512), RFC 6238 Appendix B.
        let vectors = [
            (59, ["94287082", "46119246", "90693936"]),
            (1111111109, ["07081804", "68084774", "25091201"]),
            (1111111111, ["14050471", "67062674", "99943326"]),
            (1234567890, ["89005924", "91819424", "93441116"]),
            (2000000000, ["69279037", "90698825", "38618901"]),
            (20000000000, ["65353130", "77737706", "47863826"]),
        ];
        for (index, (algorithm, seed)) in seeds.into_iter().enumerate() {
            let params = TotpParams {
                algorithm,
                digits: Digits::Eight,
                period_secs: 30,
            };
            let totp = ActiveTotp::restore(params, seed).unwrap();
            for (time, codes) in vectors {
                let code = codes[index];
                assert_eq!(code_at(&totp, time), code, "{algorithm:?} at {time}");
                assert_eq!(
                    totp.verify(code, 0, time),
                    Ok(time / 30),
                    "{algorithm:?} at {time}"
                );
            }
        }
    }

    #[test]
    fn defaults_are_sha1_six_digits_thirty_seconds_160_bits() {
        let pending = pending();
        assert_eq!(
            pending.params,
            TotpParams {
                algorithm: TotpAlgorithm::Sha1,
                digits: Digits::Six,
                period_secs: 30
            }
        );
        assert_eq!(pending.totp.secret().as_bytes().len(), 20);
        // A different draw gives a different secret.
        let other = PendingTotp::new(
            &TotpConfig::default(),
            "alice@clinic.example",
            &mut StdRng::seed_from_u64(1),
        )
        .unwrap();
        assert_ne!(pending.secret_base32(), other.secret_base32());
    }

    #[test]
    fn one_step_of_drift_is_accepted_two_are_not() {
        let totp = active();
        let now: u64 = 1_700_000_015;
        for offset in [-30i64, 0, 30] {
            let code = code_at(&totp, now.saturating_add_signed(offset));
            assert!(totp.verify(&code, 0, now).is_ok(), "offset {offset}");
        }
        for offset in [-60i64, 60] {
            let code = code_at(&totp, now.saturating_add_signed(offset));
            assert_eq!(
                totp.verify(&code, 0, now),
                Err(TotpError::WrongCode),
                "offset {offset}"
            );
        }
    }

    #[test]
    fn a_code_is_accepted_once_and_the_next_step_after_it() {
        let totp = active();
        let now = 1_700_000_000;
        let code = code_at(&totp, now);
        let step = totp.verify(&code, 0, now).unwrap();
        assert_eq!(step, now / 30);
        // Same code again, now or within its drift window: a replay.
        assert_eq!(totp.verify(&code, step, now), Err(TotpError::Replayed));
        assert_eq!(totp.verify(&code, step, now + 30), Err(TotpError::Replayed));
        // A code for an earlier step, still inside the drift window: also refused.
        let earlier = code_at(&totp, now - 30);
        assert_eq!(totp.verify(&earlier, step, now), Err(TotpError::Replayed));
        // The next step's code goes through.
        let next = code_at(&totp, now + 30);
        assert_eq!(totp.verify(&next, step, now + 30), Ok(step + 1));
    }

    #[test]
    fn malformed_and_wrong_codes_are_refused() {
        let totp = active();
        let now = 1_700_000_000;
        let code = code_at(&totp, now);
        let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
        assert_eq!(totp.verify(&wrong, 0, now), Err(TotpError::WrongCode));
        for bad in [
            "",
            "12345",
            "1234567",
            "12345a",
            "+12345",
            " 12345",
            "１２３４５６",
        ] {
            assert_eq!(
                totp.verify(bad, 0, now),
                Err(TotpError::Malformed { digits: 6 }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn activation_requires_a_correct_code_and_consumes_its_step() {
        let pending = pending();
        let now = 1_700_000_000;
        assert_eq!(
            pending.activate("000000", now).map(|(_, step)| step),
            Err(TotpError::WrongCode)
        );
        let code = pending.totp.generate(now).to_string();
        let (active, step) = pending.activate(&code, now).unwrap();
        assert_eq!(step, now / 30);
        assert_eq!(active.verify(&code, step, now), Err(TotpError::Replayed));
        assert_eq!(active.secret_bytes(), pending.totp.secret().as_bytes());
    }

    #[test]
    fn restore_round_trips_and_validates() {
        let totp = active();
        let restored = ActiveTotp::restore(totp.params(), totp.secret_bytes()).unwrap();
        let now = 1_700_000_000;
        assert_eq!(restored.verify(&code_at(&totp, now), 0, now), Ok(now / 30));
        assert!(matches!(
            ActiveTotp::restore(totp.params(), &[0u8; 15]),
            Err(TotpError::InvalidSetting(_))
        ));
        let zero_period = TotpParams {
            period_secs: 0,
            ..totp.params()
        };
        assert!(ActiveTotp::restore(zero_period, totp.secret_bytes()).is_err());
    }

    #[test]
    fn otpauth_uri_parses_back() {
        let pending = pending();
        let uri = pending.otpauth_uri().unwrap();
        assert!(
            uri.starts_with("otpauth://totp/Wardgate:alice%40clinic.example?"),
            "{uri}"
        );
        let parsed = Totp::from_url(&uri).unwrap();
        assert_eq!(parsed.issuer(), Some("Wardgate"));
        assert_eq!(parsed.account_name(), "alice@clinic.example");
        assert_eq!(parsed.secret().to_base32(), pending.secret_base32());
        assert_eq!(parsed.algorithm(), Algorithm::SHA1);
        assert_eq!(parsed.digits(), 6);
        assert_eq!(parsed.step(), 30);

        let config = TotpConfig {
            issuer: "St Mary Clinic".to_owned(),
            algorithm: TotpAlgorithm::Sha256,
            digits: Digits::Eight,
            period: HumanDuration(std::time::Duration::from_secs(60)),
        };
        let pending = PendingTotp::new(&config, "bob", &mut rng()).unwrap();
        let parsed = Totp::from_url(pending.otpauth_uri().unwrap()).unwrap();
        assert_eq!(parsed.issuer(), Some("St Mary Clinic"));
        assert_eq!(parsed.algorithm(), Algorithm::SHA256);
        assert_eq!(parsed.digits(), 8);
        assert_eq!(parsed.step(), 60);
    }

    #[test]
    fn qr_code_is_a_png() {
        let png = pending().qr_png().unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let pending = pending();
        let hex: String = pending
            .totp
            .secret()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let (active, _) = pending
            .activate(
                &pending.totp.generate(1_700_000_000).to_string(),
                1_700_000_000,
            )
            .unwrap();
        for text in [format!("{pending:?}"), format!("{active:?}")] {
            assert!(text.contains("<redacted>"), "{text}");
            assert!(!text.contains(&pending.secret_base32()), "{text}");
            assert!(!text.contains(&hex), "{text}");
        }
    }

    #[test]
    fn config_is_strict_and_checked() {
        let config: TotpConfig =
            serde_saphyr::from_str("issuer: Clinic\nalgorithm: SHA512\ndigits: 8\nperiod: 1m\n")
                .unwrap();
        assert_eq!(
            config.params().unwrap(),
            TotpParams {
                algorithm: TotpAlgorithm::Sha512,
                digits: Digits::Eight,
                period_secs: 60
            }
        );
        for bad in [
            "digits: 7\n",
            "algorithm: MD5\n",
            "period: 30\n",
            "skew: 2\n",
        ] {
            assert!(serde_saphyr::from_str::<TotpConfig>(bad).is_err(), "{bad}");
        }
        for bad in [
            "period: 10s\n",
            "period: 10m\n",
            "period: 30500ms\n",
            "issuer: \"a:b\"\n",
        ] {
            let config: TotpConfig = serde_saphyr::from_str(bad).unwrap();
            assert!(config.params().is_err(), "{bad}");
        }
        assert!(PendingTotp::new(&TotpConfig::default(), "a:b", &mut rng()).is_err());
        assert!(PendingTotp::new(&TotpConfig::default(), "", &mut rng()).is_err());
    }
}
