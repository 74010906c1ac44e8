//! The state layer: each concern behind a trait whose doc states its contract (atomicity, what
//! "missing" means), with an embedded implementation in the data directory; the shared ones
//! (Redis, PostgreSQL) come with several replicas, behind the same traits.
//!
//! - [`keys`]: key material every replica must hold the same of.
//! - [`sessions`]: session records, under the keyed hash of their token.

pub mod keys;
pub mod sessions;

use std::sync::Arc;

use crate::identity::{IdentityStore, StoreError};

/// Runs synchronous work on the embedded identity store (redb) on the blocking pool, off the
/// runtime's threads; a task that died is a store failure.
pub async fn blocking<T: Send + 'static>(
    store: Arc<dyn IdentityStore>,
    work: impl FnOnce(&dyn IdentityStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(move || work(store.as_ref()))
        .await
        .map_err(|error| StoreError::Storage(format!("store task: {error}")))?
}
