//! Key material every replica must hold the same of: the key that signs identity assertions
//! (so that every replica serves the same JWKS and upstreams verify any replica's assertion),
//! and the admin API's token.
//!
//! **Contract.** The first call creates a missing key, atomically: of two replicas starting at
//! once, one key wins and both use it. Every later call, from any replica, returns that key. A
//! key that exists but cannot be read or is malformed is an error: it is never silently
//! replaced, which would end every upstream's trust or every operator's access.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use subtle::ConstantTimeEq;

use crate::assertion::{self, AssertionKey, AssertionKeyError};

/// The admin token's file name inside the data directory.
pub const TOKEN_FILE: &str = "admin.token";
/// The secret that `wardgate user …` presents to the running gateway: 256 random bits as 64
/// lower-case hex digits, nothing else. An empty or cut-short file (a crash during the first
/// start, or a file provisioned empty) is refused at start instead of comparing equal to an
/// empty presented token.
pub struct AdminToken(String);

/// The token's length in hex digits.
const TOKEN_HEX_DIGITS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: crate::secret_file::SecretFileError,
    },
    #[error(
        "{} is not an admin token (it must be {TOKEN_HEX_DIGITS} hex digits; the file is empty, \
         cut short or edited). Delete it to have a new one generated at the next start",
        path.display()
    )]
    Malformed { path: PathBuf },
    /// Kept in a store outside the process (PostgreSQL), which could not give it.
    #[error("the admin token in the shared store: {0}")]
    Shared(String),
}

impl AdminToken {
    /// Reads `<dir>/admin.token`, creating it (mode 0600, written atomically) from 256 bits of
    /// `rng` when it is missing. A token file that anyone but its owner can read is refused: it
    /// is an operator's key.
    pub fn load_or_create(
        dir: &Path,
        rng: &mut dyn rand::CryptoRng,
    ) -> Result<Self, AdminTokenError> {
        let path = token_path(dir);
        let failed = |source| AdminTokenError::File {
            path: path.clone(),
            source,
        };
        match Self::load(&path) {
            Err(AdminTokenError::File { source, .. }) if source.is_missing() => {}
            other => return other,
        }
        let token = Self::generate(rng);
        match crate::secret_file::create_new(&path, token.0.as_bytes()) {
            Ok(()) => Ok(token),
            // Another process created it between our read and our link: use theirs.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Self::load(&path),
            Err(error) => Err(failed(error.into())),
        }
    }

    /// The token in the file at `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, AdminTokenError> {
        let text =
            crate::secret_file::read(path, 4 * TOKEN_HEX_DIGITS as u64).map_err(|source| {
                AdminTokenError::File {
                    path: path.to_owned(),
                    source,
                }
            })?;
        Self::parse(&text).ok_or_else(|| AdminTokenError::Malformed {
            path: path.to_owned(),
        })
    }

    /// A new token: 256 bits of `rng`.
    pub(crate) fn generate(rng: &mut dyn rand::CryptoRng) -> Self {
        let mut bits = [0u8; 32];
        rng.fill_bytes(&mut bits);
        Self(bits.iter().map(|byte| format!("{byte:02x}")).collect())
    }

    /// The token in `text` (surrounding white space aside), when it is one.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let token = text.trim();
        (token.len() == TOKEN_HEX_DIGITS && token.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(token.to_owned()))
    }

    /// The token's text, for the store that keeps it and the client that presents it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A presented token matches only when it is not empty and equal, in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        !presented.is_empty() && bool::from(self.0.as_bytes().ct_eq(presented))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

pub fn token_path(dir: &Path) -> PathBuf {
    dir.join(TOKEN_FILE)
}

/// A key being read (or created) from the store.
pub type Loading<'a, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'a>>;

pub trait SharedKeys: Send + Sync {
    /// The assertion signing key, and whether this call created it.
    fn assertion_key(&self) -> Loading<'_, (AssertionKey, bool), AssertionKeyError>;
    /// The admin API's token.
    fn admin_token(&self) -> Loading<'_, AdminToken, AdminTokenError>;
}

/// The embedded store: one file each in the data directory (`assertion.key`, `admin.token`),
/// created 0600 by a link that fails when another process made it first.
pub struct DataDirKeys {
    dir: PathBuf,
}

impl DataDirKeys {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
}

/// The files are small and read once, at start: read where the call is.
impl SharedKeys for DataDirKeys {
    fn assertion_key(&self) -> Loading<'_, (AssertionKey, bool), AssertionKeyError> {
        let loaded = AssertionKey::load_or_create(&self.dir.join(assertion::KEY_FILE));
        Box::pin(std::future::ready(loaded))
    }

    fn admin_token(&self) -> Loading<'_, AdminToken, AdminTokenError> {
        let loaded = AdminToken::load_or_create(&self.dir, &mut rand::rng());
        Box::pin(std::future::ready(loaded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_presented_token_never_matches_even_an_empty_token() {
        // `load` refuses an empty token file; this is the second line behind it.
        assert!(!AdminToken(String::new()).matches(b""));
        let token = AdminToken("ab".repeat(32));
        assert!(token.matches("ab".repeat(32).as_bytes()));
        assert!(!token.matches(b""));
        assert!(!token.matches("ab".repeat(31).as_bytes()));
    }

    #[tokio::test]
    async fn two_replicas_on_one_store_hold_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirKeys::new(dir.path().to_path_buf());
        let second = DataDirKeys::new(dir.path().to_path_buf());
        let (created, fresh) = first.assertion_key().await.unwrap();
        assert!(fresh);
        let (loaded, fresh) = second.assertion_key().await.unwrap();
        assert!(!fresh, "the second replica loads the first one's key");
        assert_eq!(created.kid(), loaded.kid());
        assert_eq!(created.jwks(), loaded.jwks());
        first.admin_token().await.unwrap();
        let file = token_path(dir.path());
        let written = std::fs::read_to_string(&file).unwrap();
        second.admin_token().await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            written,
            "one token for both"
        );
    }
}
