//! The PostgreSQL trail against a real server (`tests/servers/postgres.rs`): two writers on
//! one database stand for two replicas.

use std::sync::Arc;
use std::time::Duration;

use super::{PgTrail, Reader, reader};
use crate::assertion::AssertionKey;
use crate::audit::trail::{Stored, TrailError, TrailRules};
use crate::identity::seal::{Keyring, MasterKey};
use crate::store::postgres::private_postgres::PrivatePostgres;
use crate::store::postgres::{Options, Timeouts};

const T0: u64 = 1_800_000_000;
const DAY: u64 = 86_400;
const RULES: TrailRules = TrailRules {
    checkpoint_every: 4,
    checkpoint_interval: 100 * DAY,
    segment_bytes: 0,
    retention: None,
};

fn options() -> Options {
    Options {
        timeouts: Timeouts {
            connect: Duration::from_secs(1),
            statement: Duration::from_secs(2),
            call: Duration::from_secs(3),
        },
        ..Options::default()
    }
}

struct Setup {
    server: PrivatePostgres,
    dir: tempfile::TempDir,
    keyring: Arc<Keyring>,
    /// The checkpoints' public key.
    public: Vec<u8>,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let public = AssertionKey::load_or_create(&dir.path().join("signing.key"))
            .unwrap()
            .0
            .public_key();
        Self {
            server: PrivatePostgres::start(),
            dir,
            keyring: Arc::new(Keyring::new(MasterKey::new(1, [9; 32]), Vec::new()).unwrap()),
            public,
        }
    }

    /// A replica's writer, with its own copy of the checkpoints.
    async fn writer(&self, name: &str, rules: TrailRules) -> Result<PgTrail, TrailError> {
        let copy = self.dir.path().join(format!("{name}.checkpoints"));
        let (trail, _) = PgTrail::open(
            &self.server.url(),
            options(),
            self.keyring.clone(),
            // Every replica has the same signing key file.
            AssertionKey::load_or_create(&self.dir.path().join("signing.key"))
                .unwrap()
                .0,
            rules,
            vec![copy],
            T0,
        )
        .await?;
        Ok(trail)
    }

    fn reader(&self) -> Reader {
        reader(&self.server.url(), options()).unwrap()
    }

    async fn stored(&self) -> Stored {
        self.reader().stored().await.unwrap()
    }

    async fn verify(&self) -> Result<crate::audit::trail::Verified, TrailError> {
        self.stored()
            .await
            .verify(&self.public, Some(&self.keyring))
    }

    async fn sql(&self, statement: &str) {
        let (client, connection) =
            tokio_postgres::connect(&self.server.url(), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        client.batch_execute(statement).await.unwrap();
    }
}

/// Appends `n` records, each its own group, on the writer's thread (as the audit writer does).
fn append(mut trail: PgTrail, from: u64, n: u64) -> std::thread::JoinHandle<PgTrail> {
    std::thread::spawn(move || {
        for i in from..from + n {
            let json = format!(r#"{{"kind":"request","time":{}}}"#, T0 + i);
            let (appended, written) = trail.append_group([(T0 + i, json.as_bytes())], T0);
            assert!(appended && written.is_ok(), "{written:?}");
        }
        trail
    })
}

fn broken(result: Result<crate::audit::trail::Verified, TrailError>) -> (u64, String) {
    match result {
        Err(TrailError::Broken { seq, message }) => (seq, message),
        other => panic!("not broken: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_append_to_one_chain_that_verifies_and_opens() {
    let setup = Setup::new();
    let (a, b) = (
        setup.writer("a", RULES).await.unwrap(),
        setup.writer("b", RULES).await.unwrap(),
    );
    let (a, b) = (append(a, 0, 40), append(b, 1000, 40));
    let (mut a, mut b) = (a.join().unwrap(), b.join().unwrap());
    let verified = setup.verify().await.unwrap();
    assert_eq!((verified.records, verified.opened), (80, 80));
    assert!(verified.checkpoints >= 80 / 4, "one every 4 records");
    let records = setup.stored().await.records(&setup.keyring).unwrap();
    let seqs: Vec<u64> = records.iter().map(|(seq, _, _)| *seq).collect();
    assert_eq!(seqs, (0..80).collect::<Vec<_>>(), "one sequence for both");
    let times: std::collections::HashSet<u64> = records.iter().map(|(_, t, _)| *t).collect();
    assert_eq!(times.len(), 80, "every record of both, once");
    // The last checkpoint of each writer: both sign the one tree.
    let last_a = std::thread::spawn(move || (a.finish(T0).unwrap(), b.finish(T0).unwrap()));
    let (signed, again) = last_a.join().unwrap();
    assert_eq!(
        (signed.is_none(), again.is_none()),
        (true, true),
        "80 is a multiple of 4: no record is left unsigned"
    );
    let copies: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| setup.dir.path().join(format!("{n}.checkpoints")))
        .collect();
    // Each replica copies the checkpoints it signed (either may have signed them all).
    let copied: usize = copies
        .iter()
        .map(|copy| {
            std::fs::read_to_string(copy)
                .unwrap_or_default()
                .lines()
                .count()
        })
        .sum();
    assert_eq!(copied, verified.checkpoints, "every checkpoint copied once");
    // No patient id, no record in the clear, in the database.
    let dump = std::process::Command::new("pg_dump")
        .arg(setup.server.url())
        .output();
    if let Some(dump) = dump.ok().filter(|d| d.status.success()) {
        assert!(!String::from_utf8_lossy(&dump.stdout).contains("\"kind\""));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_removed_or_rewritten_record_is_named_and_copies_catch_a_rewritten_history() {
    let setup = Setup::new();
    let trail = setup.writer("a", RULES).await.unwrap();
    let trail = append(trail, 0, 12).join().unwrap();
    assert_eq!(setup.verify().await.unwrap().records, 12);
    setup
        .sql("UPDATE audit_records SET sealed = sealed || '\\x00' WHERE seq = 5")
        .await;
    let (seq, message) = broken(setup.verify().await);
    assert!(seq <= 5 && message.contains("changed"), "{seq}: {message}");
    setup
        .sql("UPDATE audit_records SET sealed = substring(sealed from 1 for length(sealed) - 1) WHERE seq = 5")
        .await;
    assert!(setup.verify().await.is_ok(), "restored");
    setup.sql("DELETE FROM audit_records WHERE seq = 7").await;
    let (seq, message) = broken(setup.verify().await);
    assert_eq!(seq, 7, "{message}");
    assert!(message.contains("missing"), "{message}");
    // Whoever owns the database cuts the end and every checkpoint after it: the copy on
    // another volume still says how long the trail was.
    setup
        .sql("DELETE FROM audit_records WHERE seq >= 7; DELETE FROM audit_checkpoints WHERE size > 4")
        .await;
    assert!(
        setup.stored().await.verify(&setup.public, None).is_ok(),
        "the database alone looks whole"
    );
    let copy = setup.dir.path().join("a.checkpoints");
    let stored = setup.stored().await.with_copies(&[copy]).unwrap();
    let (_, message) = broken(stored.verify(&setup.public, None));
    assert!(message.contains("truncated"), "{message}");
    drop(trail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_does_not_follow_its_last_record_or_lost_commits_stop_the_start() {
    let setup = Setup::new();
    let trail = setup.writer("a", RULES).await.unwrap();
    drop(append(trail, 0, 3).join().unwrap());
    setup.sql("DELETE FROM audit_records WHERE seq = 2").await;
    let Err(refused) = setup.writer("a", RULES).await else {
        panic!("a head past its records was accepted");
    };
    assert!(refused.to_string().contains("audit verify"), "{refused}");
    let fresh = Setup::new();
    fresh
        .sql("ALTER DATABASE wardgate SET synchronous_commit = off")
        .await;
    let Err(refused) = fresh.writer("a", RULES).await else {
        panic!("synchronous_commit = off was accepted");
    };
    assert!(
        refused.to_string().contains("synchronous_commit"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_fails_the_group_and_the_chain_goes_on_when_it_is_back() {
    let setup = Setup::new();
    let trail = setup.writer("a", RULES).await.unwrap();
    let mut trail = append(trail, 0, 2).join().unwrap();
    setup.server.stop();
    let (mut trail, failed) = std::thread::spawn(move || {
        let failed = trail.append_group([(T0, &b"{}"[..])], T0);
        (trail, failed)
    })
    .join()
    .unwrap();
    assert!(!failed.0, "nothing appended");
    assert!(
        matches!(failed.1, Err(TrailError::Database(_))),
        "{:?}",
        failed.1
    );
    setup.server.start_again();
    let (first, _) = std::thread::spawn(move || trail.append_group([(T0, &b"{}"[..])], T0).1)
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(first, 2, "the failed group left nothing behind");
    assert_eq!(setup.verify().await.unwrap().records, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_the_oldest_covered_records_and_the_rest_still_verify_and_prove() {
    let setup = Setup::new();
    let rules = TrailRules {
        retention: Some(30 * DAY),
        ..RULES
    };
    let trail = setup.writer("a", rules).await.unwrap();
    let mut trail = append(trail, 0, 10).join().unwrap();
    let later = T0 + 40 * DAY;
    let (trail, cut) = std::thread::spawn(move || {
        trail.append_group([(later, &b"{}"[..])], later).1.unwrap();
        let cut = trail.expire(later);
        trail
            .finish(later)
            .unwrap()
            .expect("records 8 to 10 signed");
        (trail, cut)
    })
    .join()
    .unwrap();
    let cut = cut.unwrap().expect("old records removed");
    assert_eq!(
        cut.size, 8,
        "records 8 and 9 are old too, but no checkpoint covered them yet"
    );
    let verified = setup.verify().await.unwrap();
    assert_eq!(
        (verified.records, verified.cut.map(|c| c.size)),
        (11, Some(8))
    );
    let proof = setup.stored().await.prove(8, &setup.public).unwrap();
    assert_eq!(proof.seq, 8);
    assert!(
        setup.stored().await.prove(3, &setup.public).is_err(),
        "removed"
    );
    drop(trail);
}
