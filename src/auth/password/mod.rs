//! Passwords: which ones a user may choose, and how they are stored and checked.
//!
//! **The threat.** Credential stuffing (passwords leaked by another site, tried here), guessing
//! of weak and common passwords (`Welcome2024!`), passwords built from the user's own name or
//! e-mail, and offline cracking of a stolen password store: whoever copies the account database
//! may try billions of guesses a second against a fast hash, but only a few dozen a second per
//! core against argon2id with the parameters below. A login flood is a threat of its own: every
//! attempt costs the gateway one argon2id computation, so that work must be bounded.
//!
//! **The rule.**
//!
//! ```text
//!  password, as typed
//!     │  Secret::new: Unicode NFKC, before any check and before hashing
//!     ▼
//!  Policy::check ──── refused: every failed rule (Reason), each in plain words
//!     │
//!     ▼
//!  HashPool ───────── queue full: PoolError::Busy at once (503 with Retry-After)
//!     │  pool_size threads of its own, a bounded queue
//!     ▼
//!  Hasher: argon2id ─ $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>  (PHC string)
//! ```
//!
//! * **Policy** ([`Policy`], [`Preset`]): `complexity` (the default, as the product brief asks)
//!   wants at least 12 characters with a lower-case letter, an upper-case letter, a digit and a
//!   symbol (any character that is neither a letter nor a digit; a space counts, so a sentence
//!   with a digit and capitals qualifies); `nist-800-63b` wants at least 15 characters and no
//!   composition rules. Both accept up to [`MAX_LENGTH`] characters (128, twice what NIST asks
//!   for: room for a long passphrase, while zxcvbn and the hash still see bounded input), count
//!   characters as Unicode code points after NFKC, and refuse a password that zxcvbn scores
//!   below 3 (its dictionaries hold the common and leaked passwords) or that contains the user
//!   name, the e-mail address or the e-mail's local part (case-insensitive; names shorter than
//!   3 characters are not searched for, or a user `al` could not use "always"). Letters of
//!   scripts without case (Chinese, Arabic) can never meet the upper/lower-case rules: another
//!   reason to prefer `nist-800-63b`.
//! * **Storage** ([`Hasher`]): argon2id, a fresh 16-byte salt per password, the configured
//!   memory, iterations and parallelism, refused below OWASP's floor (19 MiB, 2, 1). A stored
//!   hash whose algorithm or parameters differ from the configured ones still verifies, as
//!   [`Verification::ValidNeedsRehash`]: the login handler stores a new hash then, so raising
//!   the parameters upgrades every account at its next login. The comparison is constant-time
//!   (the `phc` crate's `Output` compares with `ct_eq`). An unknown user name gets
//!   [`Hasher::dummy_verify`], the same work against a hash made at start, so that "no such
//!   user" and "wrong password" take the same time.
//! * **Bounded work** ([`HashPool`]): hashing runs on `pool_size` threads of its own (the
//!   number of cores by default), never on tokio's blocking pool, so that a login flood cannot
//!   starve the rest of the gateway and the rest cannot starve logins. At most `queue` jobs wait;
//!   beyond that a call fails at once with [`PoolError::Busy`] instead of piling up. Peak memory
//!   is `pool_size` × `memory` (16 cores: 304 MiB at the defaults).
//! * **Secrets in memory** ([`Secret`]): the password never appears in `Debug` output, and its
//!   buffer is overwritten with zeros when dropped. Copies made before it became a `Secret`
//!   (socket and parser buffers) and argon2's own working memory are not cleared: this narrows
//!   the window, it does not close it.
//!
//! **Cost.** One verification at the default parameters takes 17.6 ms on one core of the
//! development machine (a 2-core VM; `cargo bench --bench password`): about 57 logins a second
//! per core. An attacker with the stolen store pays the same per guess and per account. The
//! policy check (mostly zxcvbn) takes about 0.25 ms.
//!
//! **The standard.** NIST SP 800-63B-4 section 3.1.1.2 (password verifiers: at least 15
//! characters for single-factor use, at least 64 allowed, no composition rules, a blocklist of
//! common and compromised passwords and of context-specific words, NFKC normalization, each code
//! point one character); OWASP Password Storage Cheat Sheet (argon2id with at least m=19 MiB,
//! t=2, p=1); OWASP ASVS 5.0 V6.2 (password security) and V11.4 (password storage).

mod hashing;
mod policy;
mod pool;

use std::num::NonZeroUsize;

use serde::Deserialize;

use crate::units::ByteSize;
pub use hashing::{HashError, HashParams, Hasher, Verification};
pub use policy::{MAX_LENGTH, Owner, Policy, Preset, Reason};
pub use pool::{HashPool, PoolError};

/// A password in memory: NFKC-normalized, hidden from `Debug`, zeroed on drop (module doc).
pub struct Secret(String);

impl Secret {
    /// Takes the password as typed and keeps its NFKC form; the typed form is zeroed.
    pub fn new(typed: String) -> Self {
        use unicode_normalization::UnicodeNormalization;
        let normalized = typed.nfkc().collect();
        // Wrapped only to be zeroed by `Drop`.
        drop(Self(typed));
        Self(normalized)
    }

    /// The normalized password.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        // Zero the whole allocation, not only the length in use; `black_box` keeps the
        // optimizer from removing stores to memory that is freed right after.
        let capacity = bytes.capacity();
        bytes.clear();
        bytes.resize(capacity, 0);
        std::hint::black_box(&mut bytes);
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `auth.password:` in gateway.yaml.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "PasswordFile")]
pub struct PasswordConfig {
    pub policy: Policy,
    pub hashing: HashingConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordFile {
    #[serde(default)]
    preset: Preset,
    #[serde(default)]
    min_length: Option<usize>,
    #[serde(default)]
    hashing: HashingConfig,
}

impl TryFrom<PasswordFile> for PasswordConfig {
    type Error = String;

    fn try_from(file: PasswordFile) -> Result<Self, String> {
        Ok(Self {
            policy: Policy::new(file.preset, file.min_length)?,
            hashing: file.hashing,
        })
    }
}

/// `auth.password.hashing:`: argon2id parameters and the pool that runs it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "HashingFile")]
pub struct HashingConfig {
    pub params: HashParams,
    /// Hashing threads; the number of cores when absent.
    pub pool_size: Option<NonZeroUsize>,
    /// Jobs that may wait for a thread; further ones are refused as busy.
    pub queue: usize,
    /// The hashing threads' scheduling priority (nice, 0 to 19): below the proxy's, so a login
    /// flood slows logins down instead of proxied traffic.
    pub nice: u8,
}

/// `queue` when the file says nothing. The last job in the queue waits `queue / pool_size`
/// jobs of about 18 ms: 72 ms on 16 cores, 0.6 s on 2, well inside a login's patience.
pub const DEFAULT_QUEUE: usize = 64;
/// `nice` when the file says nothing: a busy core gives the hashing threads about a tenth of
/// its time (the kernel's weights: 110 against 1024 for the proxy at 0).
pub const DEFAULT_NICE: u8 = 10;

impl Default for HashingConfig {
    fn default() -> Self {
        Self {
            params: HashParams::OWASP_MINIMUM,
            pool_size: None,
            queue: DEFAULT_QUEUE,
            nice: DEFAULT_NICE,
        }
    }
}

impl HashingConfig {
    /// `pool_size`, or the number of cores (one if that cannot be told).
    pub fn threads(&self) -> NonZeroUsize {
        self.pool_size
            .or_else(|| std::thread::available_parallelism().ok())
            .unwrap_or(NonZeroUsize::MIN)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HashingFile {
    #[serde(default = "default_memory")]
    memory: ByteSize,
    #[serde(default = "default_iterations")]
    iterations: u32,
    #[serde(default = "default_parallelism")]
    parallelism: u32,
    #[serde(default)]
    pool_size: Option<NonZeroUsize>,
    #[serde(default = "default_queue")]
    queue: usize,
    #[serde(default = "default_nice")]
    nice: u8,
}

fn default_memory() -> ByteSize {
    ByteSize(u64::from(HashParams::OWASP_MINIMUM.memory_kib()) * 1024)
}
fn default_iterations() -> u32 {
    HashParams::OWASP_MINIMUM.iterations()
}
fn default_parallelism() -> u32 {
    HashParams::OWASP_MINIMUM.parallelism()
}
fn default_queue() -> usize {
    DEFAULT_QUEUE
}
fn default_nice() -> u8 {
    DEFAULT_NICE
}

impl TryFrom<HashingFile> for HashingConfig {
    type Error = String;

    fn try_from(file: HashingFile) -> Result<Self, String> {
        Ok(Self {
            params: HashParams::new(file.memory, file.iterations, file.parallelism)?,
            pool_size: file.pool_size,
            queue: file.queue,
            nice: match file.nice {
                0..=19 => file.nice,
                _ => return Err("nice: must be 0 (the proxy's priority) to 19 (the lowest)".into()),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{self, ConfigError};

    const BASE: &str = "version: 1
listen: { https: \"127.0.0.1:0\" }
tls: { cert: c.pem, key: k.pem }
upstreams: { app: { url: \"https://127.0.0.1:1\" } }
routes: [ { path: /**, upstream: app, auth: none } ]
";

    fn load(auth: &str) -> Result<PasswordConfig, ConfigError> {
        config::parse(Path::new("gateway.yaml"), &format!("{BASE}{auth}"))
            .map(|loaded| loaded.config.auth.password)
    }

    fn refusal(auth: &str) -> (String, String) {
        match load(auth) {
            Err(ConfigError::Invalid { key, message, .. }) => (key, message),
            other => panic!("{auth}: {other:?}"),
        }
    }

    #[test]
    fn secret_is_nfkc_normalized_and_hidden_from_debug() {
        // Full-width letters and digits, and the `ﬀ` ligature.
        let secret = Secret::new("Ｓｔａｆｆ２０２４ ｃｏﬀee".to_owned());
        assert_eq!(secret.expose(), "Staff2024 coffee");
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }

    #[test]
    fn defaults_are_the_complexity_preset_and_owasp_minimum() {
        let config = load("").unwrap();
        assert_eq!(config, PasswordConfig::default());
        assert_eq!(config.policy.preset(), Preset::Complexity);
        assert_eq!(config.policy.min_length(), 12);
        let params = &config.hashing.params;
        assert_eq!(
            (
                params.memory_kib(),
                params.iterations(),
                params.parallelism()
            ),
            (19 * 1024, 2, 1)
        );
        assert_eq!(config.hashing.pool_size, None);
        assert!(config.hashing.threads().get() >= 1);
        assert_eq!(config.hashing.queue, 64);
        // An empty `auth:` section is the same as none.
        assert_eq!(load("auth: {}\n").unwrap(), config);
    }

    #[test]
    fn presets_and_overrides_are_read() {
        let config = load("auth:\n  password:\n    preset: nist-800-63b\n").unwrap();
        assert_eq!(config.policy.preset(), Preset::Nist80063b);
        assert_eq!(config.policy.min_length(), 15);

        let config = load(
            "auth:
  password:
    preset: complexity
    min_length: 14
    hashing: { memory: 64MiB, iterations: 3, parallelism: 2, pool_size: 4, queue: 8 }
",
        )
        .unwrap();
        assert_eq!(config.policy.min_length(), 14);
        let params = &config.hashing.params;
        assert_eq!(
            (
                params.memory_kib(),
                params.iterations(),
                params.parallelism()
            ),
            (64 * 1024, 3, 2)
        );
        assert_eq!(config.hashing.threads().get(), 4);
        assert_eq!(config.hashing.queue, 8);
    }

    #[test]
    fn errors_name_the_line() {
        let error = load("auth:\n  password:\n    hashing:\n      iterations: 1\n").unwrap_err();
        assert!(error.to_string().starts_with("gateway.yaml:9:"), "{error}");
    }

    #[test]
    fn min_length_below_the_preset_is_refused() {
        let (key, message) =
            refusal("auth: { password: { preset: nist-800-63b, min_length: 12 } }\n");
        assert_eq!(key, "auth.password");
        assert!(message.contains("at least 15"), "{message}");
        let (_, message) = refusal("auth: { password: { min_length: 8 } }\n");
        assert!(message.contains("at least 12"), "{message}");
        let (_, message) = refusal("auth: { password: { min_length: 129 } }\n");
        assert!(message.contains("128"), "{message}");
    }

    #[test]
    fn argon2_parameters_below_the_owasp_floor_are_refused() {
        for (hashing, needle) in [
            ("{ memory: 16MiB }", "19MiB"),
            ("{ iterations: 1 }", "iterations"),
            ("{ parallelism: 0 }", "parallelism"),
            ("{ memory: 19MiB, parallelism: 4096 }", "parallelism"),
        ] {
            let (key, message) =
                refusal(&format!("auth: {{ password: {{ hashing: {hashing} }} }}\n"));
            assert_eq!(key, "auth.password.hashing", "{hashing}");
            assert!(message.contains(needle), "{hashing}: {message}");
        }
        // Not a multiple of 1 KiB: argon2 counts memory in KiB.
        let (_, message) = refusal("auth: { password: { hashing: { memory: 20000001B } } }\n");
        assert!(message.contains("KiB"), "{message}");
        let (_, message) = refusal("auth: { password: { hashing: { nice: 20 } } }\n");
        assert!(
            message.contains("0 (the proxy's priority) to 19"),
            "{message}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let (key, message) = refusal("auth: { password: { presett: complexity } }\n");
        assert_eq!(key, "auth.password.presett");
        assert!(message.contains("unknown field"), "{message}");
        let (key, _) = refusal("auth: { password: { preset: strong } }\n");
        assert_eq!(key, "auth.password.preset");
        let (key, _) = refusal("auth: { password: { hashing: { pool_size: 0 } } }\n");
        assert_eq!(key, "auth.password.hashing.pool_size");
    }
}
