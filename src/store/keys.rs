//! Key material every replica must hold the same of: the key that signs identity assertions
//! (so that every replica serves the same JWKS and upstreams verify any replica's assertion),
//! and the admin API's token.
//!
//! **Contract.** The first call creates a missing key, atomically: of two replicas starting at
//! once, one key wins and both use it. Every later call, from any replica, returns that key. A
//! key that exists but cannot be read or is malformed is an error: it is never silently
//! replaced, which would end every upstream's trust or every operator's access.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use crate::admin::{AdminToken, AdminTokenError};
use crate::assertion::{self, AssertionKey, AssertionKeyError};

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
        let file = crate::admin::token_path(dir.path());
        let written = std::fs::read_to_string(&file).unwrap();
        second.admin_token().await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            written,
            "one token for both"
        );
    }
}
