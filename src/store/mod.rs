//! The state layer: each concern behind a trait whose doc states its contract (atomicity, what
//! "missing" means), with an embedded implementation in the data directory; the shared ones
//! (Redis, PostgreSQL) come with several replicas, behind the same traits.
//!
//! - [`keys`]: key material every replica must hold the same of.
//! - [`sessions`]: session records, under the keyed hash of their token.

pub mod keys;
pub mod sessions;
