//! Where the trail is kept, behind the writer's one interface: segment files on this host
//! ([`Trail`], the default) or a PostgreSQL database of its own that every replica appends to
//! (`audit::postgres`, feature `postgres`). Both seal, chain, hash and sign alike, so one
//! [`Stored::verify`] checks either.

use std::sync::Arc;

use super::trail::{Checkpoint, Cut, Stored, Trail, TrailError};
use crate::identity::seal::Keyring;

/// The writer's trail.
pub enum Backend {
    Files(Trail),
    #[cfg(feature = "postgres")]
    Postgres(super::postgres::PgTrail),
}

impl Backend {
    /// Appends a group, all or none; durable when `durable` or a checkpoint is due, which is
    /// then signed. See [`Trail::append_group`]; in PostgreSQL every group commits, durably.
    pub fn append_group<'r>(
        &mut self,
        records: impl IntoIterator<Item = (u64, &'r [u8])>,
        durable: bool,
        now: u64,
    ) -> (bool, Result<(u64, Option<Checkpoint>), TrailError>) {
        match self {
            Backend::Files(trail) => trail.append_group(records, durable, now),
            #[cfg(feature = "postgres")]
            Backend::Postgres(trail) => trail.append_group(records, now),
        }
    }

    /// After a failed group: makes the next append continue the chain.
    pub fn recover(&mut self) -> Result<(), TrailError> {
        match self {
            Backend::Files(trail) => trail.recover(),
            // A failed transaction left nothing behind.
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => Ok(()),
        }
    }

    /// Removes what the retention no longer keeps at `now`.
    pub fn expire(&mut self, now: u64) -> Result<Option<Cut>, TrailError> {
        match self {
            Backend::Files(trail) => trail.expire(now),
            #[cfg(feature = "postgres")]
            Backend::Postgres(trail) => trail.expire(now),
        }
    }

    /// Signs a last checkpoint over what no checkpoint covers yet.
    pub fn finish(&mut self, now: u64) -> Result<Option<Checkpoint>, TrailError> {
        match self {
            Backend::Files(trail) => trail.finish(now),
            #[cfg(feature = "postgres")]
            Backend::Postgres(trail) => trail.finish(now),
        }
    }

    /// Where readers beside the writer read the records.
    pub fn source(&self) -> Source {
        match self {
            Backend::Files(trail) => {
                let (dir, keyring) = trail.reader();
                Source::Files { dir, keyring }
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres(trail) => {
                let (reader, keyring) = trail.reader();
                Source::Postgres { reader, keyring }
            }
        }
    }
}

/// The records, read beside the writer (queries).
#[derive(Clone)]
pub enum Source {
    /// A frame being written reads as a torn end, and is left for the next read.
    Files {
        dir: std::path::PathBuf,
        keyring: Arc<Keyring>,
    },
    #[cfg(feature = "postgres")]
    Postgres {
        reader: super::postgres::Reader,
        keyring: Arc<Keyring>,
    },
}

impl Source {
    /// Every record kept, opened: `(seq, time, JSON)`.
    pub async fn records(&self) -> Result<Vec<(u64, u64, Vec<u8>)>, TrailError> {
        match self.clone() {
            Source::Files { dir, keyring } => {
                tokio::task::spawn_blocking(move || Stored::read(&dir, &[])?.records(&keyring))
                    .await
                    .map_err(|_| TrailError::Reader)?
            }
            #[cfg(feature = "postgres")]
            Source::Postgres { reader, keyring } => reader.stored().await?.records(&keyring),
        }
    }
}
