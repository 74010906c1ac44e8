//! The audit trail in PostgreSQL (`audit.postgres`): one chain that every replica appends to, in
//! a database of its own.
//!
//! **The threat.** With several replicas, a trail per replica answers "who saw this patient"
//! only by merging every replica's files, and a replica's disk that is lost or rewritten takes
//! its part of the history with it. The records name patients, so they must not sit beside the
//! accounts either (the article's separate database), and whoever reads or runs that database
//! must learn no patient from it and must not be able to rewrite history unseen.
//!
//! **The rule.** Each group of records is one transaction: it locks the single `audit_head`
//! row (`FOR UPDATE`), which holds the trail's size, the last leaf hash and the Merkle tree's
//! frontier; seals each record under the audit keyring, bound to the sequence number it takes
//! there; inserts the records; signs a checkpoint when one is due; moves the head; commits.
//! The head's lock orders the groups of every replica into one chain with one sequence, and a
//! group that fails leaves nothing behind. The rows are the fields of the embedded trail's
//! frames (`trail`), hashed the same way, so [`Stored::verify`] checks both alike. The audit
//! keyring and the checkpoint signing key are files on each replica (the same on all), never in
//! the database: whoever owns it can open no record and sign no checkpoint, and a rewritten
//! history fails against the checkpoint copies kept elsewhere (files on another volume, syslog,
//! a webhook: the config warns when there are none). A commit is the durability (the start
//! refuses a server with `synchronous_commit = off`); when its answer is lost (the connection
//! broke after `COMMIT`), the writer writes the group again: a record may then be there twice,
//! never missing. Retention deletes the oldest records that a checkpoint covers and keeps their
//! cut (`trail::Cut`) in the head, as the embedded trail keeps `cut.json`.
//!
//! **The standard.** HIPAA 164.312(b), 164.312(c)(1); RFC 9162 (tree heads).
//!
//! ```text
//!   wardgate_audit_schema  version                                       (migrations)
//!   audit_head             one row: size | prev | frontier | checkpointed | checkpointed_at | cut
//!   audit_records          seq | time | prev | sealed
//!   audit_checkpoints      size | time | root | key | signature
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Transaction;
use tokio_postgres::IsolationLevel;

use super::merkle::{Frontier, Hash, leaf_hash};
use super::trail::{self, Checkpoint, Cut, Frame, Start, Stored, TrailError, TrailRules};
use crate::assertion::AssertionKey;
use crate::identity::StoreError;
use crate::identity::seal::{Keyring, Purpose};
use crate::store::postgres::migrations::Schema;
use crate::store::postgres::{Database, Options, bigint, unsigned};

/// The audit database's schema ("waudit" and 1 for the lock).
pub const SCHEMA: Schema = Schema {
    table: "wardgate_audit_schema",
    lock: 0x7761_7564_6974_0001,
    migrations: &[r#"
    CREATE TABLE audit_head (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        size bigint NOT NULL,
        -- The last record's leaf hash (zeros before the first).
        prev bytea NOT NULL,
        -- The Merkle frontier: per subtree, largest first, its height (u32 BE) and root.
        frontier bytea NOT NULL,
        -- The size and time of the last checkpoint.
        checkpointed bigint NOT NULL,
        checkpointed_at bigint NOT NULL,
        -- What retention removed (`trail::Cut`), once it removed anything.
        cut jsonb
    );
    INSERT INTO audit_head VALUES (true, 0, decode(repeat('00', 32), 'hex'), '', 0, 0, NULL);
    CREATE TABLE audit_records (
        seq bigint PRIMARY KEY,
        time bigint NOT NULL,
        prev bytea NOT NULL,
        -- Sealed under the audit keyring (`Purpose::AuditRecord`, bound to `seq`).
        sealed bytea NOT NULL
    );
    CREATE TABLE audit_checkpoints (
        size bigint PRIMARY KEY,
        time bigint NOT NULL,
        root text NOT NULL,
        key text NOT NULL,
        signature text NOT NULL
    );
    "#],
};

/// How long a read of the whole trail may take (a query, `wardgate audit verify`).
const READ_LIMIT: Duration = Duration::from_secs(600);

/// Reads the trail, beside the writer or without one (`wardgate audit`).
#[derive(Clone)]
pub struct Reader(Arc<Database>);

/// The trail, open for appending; every replica's writer has one, over the same database.
pub struct PgTrail {
    db: Arc<Database>,
    keyring: Arc<Keyring>,
    /// The writer is a thread of its own: it waits for the database on the gateway's runtime.
    runtime: tokio::runtime::Handle,
    signer: AssertionKey,
    rules: TrailRules,
    copies: Vec<PathBuf>,
}

/// The head row, locked for the rest of a transaction.
struct Head {
    frontier: Frontier,
    prev: Hash,
    /// Size and time of the last checkpoint.
    checkpointed: (u64, u64),
    cut: Option<Cut>,
}

fn database(error: StoreError) -> TrailError {
    match error {
        StoreError::Storage(text) => TrailError::Database(text),
        other => TrailError::Database(other.to_string()),
    }
}

fn corrupt(message: &str) -> StoreError {
    StoreError::Corrupt(format!("audit trail: {message}"))
}

fn hash(column: &str, bytes: &[u8]) -> Result<Hash, StoreError> {
    Hash::try_from(bytes).map_err(|_| corrupt(&format!("{column}: not 32 bytes")))
}

impl Head {
    async fn lock(tx: &Transaction<'_>) -> Result<Self, StoreError> {
        let row = tx
            .query_one(
                "SELECT size, prev, frontier, checkpointed, checkpointed_at, cut \
                 FROM audit_head FOR UPDATE",
                &[],
            )
            .await?;
        let size = unsigned("size", row.try_get(0)?)?;
        let subtrees = row
            .try_get::<_, &[u8]>(2)?
            .chunks(36)
            .map(|chunk| {
                let (height, root) = chunk.split_at_checked(4)?;
                Some((
                    u32::from_be_bytes(height.try_into().ok()?),
                    root.try_into().ok()?,
                ))
            })
            .collect::<Option<Vec<_>>>();
        let frontier = subtrees
            .and_then(|subtrees| Frontier::resume(size, subtrees))
            .ok_or_else(|| corrupt("the head's frontier does not match its size"))?;
        let cut = row
            .try_get::<_, Option<serde_json::Value>>(5)?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|_| corrupt("the head's cut is not one"))?;
        Ok(Self {
            frontier,
            prev: hash("prev", row.try_get(1)?)?,
            checkpointed: (
                unsigned("checkpointed", row.try_get(3)?)?,
                unsigned("checkpointed_at", row.try_get(4)?)?,
            ),
            cut,
        })
    }

    async fn store(&self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        let mut frontier = Vec::with_capacity(36 * self.frontier.subtrees().len());
        for (height, root) in self.frontier.subtrees() {
            frontier.extend_from_slice(&height.to_be_bytes());
            frontier.extend_from_slice(root);
        }
        let cut = self
            .cut
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(|_| corrupt("the cut cannot be encoded"))?;
        tx.execute(
            "UPDATE audit_head SET size = $1, prev = $2, frontier = $3, checkpointed = $4, \
             checkpointed_at = $5, cut = $6",
            &[
                &bigint(self.frontier.size())?,
                &&self.prev[..],
                &frontier,
                &bigint(self.checkpointed.0)?,
                &bigint(self.checkpointed.1)?,
                &cut,
            ],
        )
        .await?;
        Ok(())
    }

    /// Signs a checkpoint of the head's tree at `now` and keeps it in the database.
    async fn checkpoint(
        &mut self,
        tx: &Transaction<'_>,
        signer: &AssertionKey,
        now: u64,
    ) -> Result<Checkpoint, StoreError> {
        let checkpoint = trail::sign(signer, &self.frontier, now);
        tx.execute(
            "INSERT INTO audit_checkpoints (size, time, root, key, signature) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &bigint(checkpoint.size)?,
                &bigint(checkpoint.time)?,
                &checkpoint.root,
                &checkpoint.key,
                &checkpoint.signature,
            ],
        )
        .await?;
        self.checkpointed = (checkpoint.size, now);
        Ok(checkpoint)
    }
}

/// A record row (`seq, time, prev, sealed`) as the frame it would be in a segment file.
fn frame(row: &tokio_postgres::Row) -> Result<Frame, StoreError> {
    Ok(Frame::new(
        unsigned("seq", row.try_get(0)?)?,
        unsigned("time", row.try_get(1)?)?,
        hash("prev", row.try_get(2)?)?,
        row.try_get(3)?,
    ))
}

impl PgTrail {
    /// Connects to the audit database at `url`, brings its schema up to date and checks that
    /// its commits are durable and its head continues its last record: what a replica starts
    /// with at `now` (a new trail's checkpoint interval starts then). Returns the trail and
    /// the records it holds.
    pub async fn open(
        url: &str,
        options: Options,
        keyring: Arc<Keyring>,
        signer: AssertionKey,
        rules: TrailRules,
        copies: Vec<PathBuf>,
        now: u64,
    ) -> Result<(Self, u64), TrailError> {
        trail::make_copy_dirs(&copies)?;
        let db = Database::open(url, options).map_err(database)?;
        db.migrate(&SCHEMA).await.map_err(database)?;
        let size = db
            .run(async {
                let client = db.client().await?;
                let commit: String = client
                    .query_one("SHOW synchronous_commit", &[])
                    .await?
                    .try_get(0)?;
                if commit == "off" {
                    return Err(StoreError::Storage(
                        "synchronous_commit is off: a committed audit record could be lost in a \
                         crash; turn it on for the audit database"
                            .into(),
                    ));
                }
                client
                    .execute(
                        "UPDATE audit_head SET checkpointed_at = $1 WHERE size = 0",
                        &[&bigint(now)?],
                    )
                    .await?;
                let head = client
                    .query_one("SELECT size, prev FROM audit_head", &[])
                    .await?;
                let size = unsigned("size", head.try_get(0)?)?;
                let last = client
                    .query_opt(
                        "SELECT seq, time, prev, sealed FROM audit_records \
                         ORDER BY seq DESC LIMIT 1",
                        &[],
                    )
                    .await?;
                if let Some(last) = last {
                    let last = frame(&last)?;
                    if last.seq + 1 != size || last.leaf != hash("prev", head.try_get(1)?)? {
                        return Err(corrupt(
                            "the head does not follow the last record: run `wardgate audit verify`",
                        ));
                    }
                }
                Ok(size)
            })
            .await
            .map_err(database)?;
        let trail = Self {
            db: Arc::new(db),
            keyring,
            runtime: tokio::runtime::Handle::current(),
            signer,
            rules,
            copies,
        };
        Ok((trail, size))
    }

    /// The reader beside this writer, and the keys that open the records.
    pub fn reader(&self) -> (Reader, Arc<Keyring>) {
        (Reader(self.db.clone()), self.keyring.clone())
    }

    /// Appends a group in one transaction (all or none, durable once committed), with a
    /// checkpoint when one is due: whether it was appended, the first record's sequence number
    /// and the checkpoint, which is then also appended to the copies.
    pub fn append_group<'r>(
        &mut self,
        records: impl IntoIterator<Item = (u64, &'r [u8])>,
        now: u64,
    ) -> (bool, Result<(u64, Option<Checkpoint>), TrailError>) {
        let records: Vec<(u64, &[u8])> = records.into_iter().collect();
        match self.runtime.block_on(self.commit_group(&records, now)) {
            Ok((first, checkpoint)) => {
                if let Some(checkpoint) = &checkpoint {
                    self.copy(checkpoint);
                }
                (true, Ok((first, checkpoint)))
            }
            Err(error) => (false, Err(database(error))),
        }
    }

    async fn commit_group(
        &self,
        records: &[(u64, &[u8])],
        now: u64,
    ) -> Result<(u64, Option<Checkpoint>), StoreError> {
        let (db, keyring) = (&self.db, &self.keyring);
        db.run(async {
            let mut client = db.client().await?;
            let tx = client.transaction().await?;
            let mut head = Head::lock(&tx).await?;
            let first = head.frontier.size();
            let n = records.len();
            let (mut seqs, mut times) = (Vec::with_capacity(n), Vec::with_capacity(n));
            let (mut prevs, mut sealeds) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for &(time, record) in records {
                let seq = head.frontier.size();
                let sealed = keyring.seal(Purpose::AuditRecord, &seq.to_be_bytes(), record)?;
                let leaf = leaf_hash(&trail::frame_body(seq, time, &head.prev, &sealed));
                seqs.push(bigint(seq)?);
                times.push(bigint(time)?);
                prevs.push(head.prev.to_vec());
                sealeds.push(sealed);
                head.prev = leaf;
                head.frontier.push(leaf);
            }
            if n > 0 {
                tx.execute(
                    "INSERT INTO audit_records (seq, time, prev, sealed) \
                     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[])",
                    &[&seqs, &times, &prevs, &sealeds],
                )
                .await?;
            }
            let unsigned = head.frontier.size() - head.checkpointed.0;
            let checkpoint = match self
                .rules
                .checkpoint_due(unsigned, head.checkpointed.1, now)
            {
                true => Some(head.checkpoint(&tx, &self.signer, now).await?),
                false => None,
            };
            head.store(&tx).await?;
            tx.commit().await?;
            Ok((first, checkpoint))
        })
        .await
    }

    /// Appends `checkpoint` to every copy; the records and the checkpoint are committed
    /// already, so a copy that fails is an `ERROR` line, not a failed write.
    fn copy(&self, checkpoint: &Checkpoint) {
        for path in &self.copies {
            if let Err(error) = trail::append_checkpoint(path, checkpoint) {
                tracing::error!(target: "wardgate::audit", %error, "the checkpoint could not be copied");
            }
        }
    }

    /// Signs a last checkpoint when records came since the one before.
    pub fn finish(&mut self, now: u64) -> Result<Option<Checkpoint>, TrailError> {
        let db = &self.db;
        let signed = self.runtime.block_on(db.run(async {
            let mut client = db.client().await?;
            let tx = client.transaction().await?;
            let mut head = Head::lock(&tx).await?;
            if head.frontier.size() == head.checkpointed.0 {
                return Ok(None);
            }
            let checkpoint = head.checkpoint(&tx, &self.signer, now).await?;
            head.store(&tx).await?;
            tx.commit().await?;
            Ok(Some(checkpoint))
        }));
        let signed = signed.map_err(database)?;
        if let Some(checkpoint) = &signed {
            self.copy(checkpoint);
        }
        Ok(signed)
    }

    /// Removes what the configured retention no longer keeps at `now`: the oldest records
    /// older than the retention that a checkpoint covers, however many replicas try at once.
    pub fn expire(&mut self, now: u64) -> Result<Option<Cut>, TrailError> {
        let Some(retention) = self.rules.retention else {
            return Ok(None);
        };
        let before = now.saturating_sub(retention);
        let db = &self.db;
        let cut = self.runtime.block_on(db.run_within(READ_LIMIT, async {
            let mut client = db.client().await?;
            let tx = client.transaction().await?;
            tx.batch_execute("SET LOCAL statement_timeout = '600s'")
                .await?;
            let mut head = Head::lock(&tx).await?;
            let start = Start::of(head.cut.clone()).map_err(|_| corrupt("the cut is not one"))?;
            let (mut frontier, mut prev) = (start.frontier, start.prev);
            let rows = tx
                .query(
                    "SELECT seq, time, prev, sealed FROM audit_records \
                     WHERE seq >= $1 AND seq < $2 AND seq < (SELECT coalesce(min(seq), $2) \
                     FROM audit_records WHERE seq >= $1 AND time >= $3) ORDER BY seq",
                    &[
                        &bigint(frontier.size())?,
                        &bigint(head.checkpointed.0)?,
                        &bigint(before)?,
                    ],
                )
                .await?;
            if rows.is_empty() {
                return Ok(None);
            }
            let mut newest = 0;
            for row in &rows {
                let frame = frame(row)?;
                if frame.seq != frontier.size() || frame.prev != prev {
                    return Err(corrupt("the chain is broken: run `wardgate audit verify`"));
                }
                (prev, newest) = (frame.leaf, frame.time.max(newest));
                frontier.push(frame.leaf);
            }
            let cut = Cut::at(&frontier, &prev, now, newest);
            tx.execute(
                "DELETE FROM audit_records WHERE seq < $1",
                &[&bigint(cut.size)?],
            )
            .await?;
            head.cut = Some(cut.clone());
            head.store(&tx).await?;
            tx.commit().await?;
            Ok(Some(cut))
        }));
        cut.map_err(database)
    }
}

impl Reader {
    /// The whole trail as one snapshot: the cut, every record kept and every checkpoint.
    pub async fn stored(&self) -> Result<Stored, TrailError> {
        let db = &self.0;
        let (cut, frames, checkpoints) = db
            .run_within(READ_LIMIT, async {
                let mut client = db.client().await?;
                let tx = client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await?;
                tx.batch_execute("SET LOCAL statement_timeout = '600s'")
                    .await?;
                let cut = tx
                    .query_one("SELECT cut FROM audit_head", &[])
                    .await?
                    .try_get::<_, Option<serde_json::Value>>(0)?
                    .map(serde_json::from_value::<Cut>)
                    .transpose()
                    .map_err(|_| corrupt("the head's cut is not one"))?;
                let records = tx
                    .query(
                        "SELECT seq, time, prev, sealed FROM audit_records ORDER BY seq",
                        &[],
                    )
                    .await?;
                let frames = records.iter().map(frame).collect::<Result<Vec<_>, _>>()?;
                let mut checkpoints = Vec::new();
                for row in tx
                    .query(
                        "SELECT size, time, root, key, signature FROM audit_checkpoints",
                        &[],
                    )
                    .await?
                {
                    checkpoints.push(Checkpoint {
                        size: unsigned("size", row.try_get(0)?)?,
                        time: unsigned("time", row.try_get(1)?)?,
                        root: row.try_get(2)?,
                        key: row.try_get(3)?,
                        signature: row.try_get(4)?,
                    });
                }
                Ok((cut, frames, checkpoints))
            })
            .await
            .map_err(database)?;
        Stored::assemble(cut, frames, checkpoints)
    }
}

/// A reader of the trail at `url` for a command beside the replicas (`wardgate audit`): the
/// schema is left as it is.
pub fn reader(url: &str, options: Options) -> Result<Reader, TrailError> {
    Ok(Reader(Arc::new(
        Database::open(url, options).map_err(database)?,
    )))
}

#[cfg(test)]
mod tests;
