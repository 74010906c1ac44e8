//! The backend against a real PostgreSQL: each test starts its own private server
//! (`tests/servers/postgres.rs`), so tests that stop it or rewrite its schema stand alone.

use std::sync::Arc;
use std::time::Duration;

use super::private_postgres::PrivatePostgres;
use super::{Options, Postgres, Timeouts, migrations};
use crate::identity::{Keyring, MasterKey, StoreError, UserId};
use crate::store::accounts::Accounts;

/// Short limits, so that the tests of failures run in seconds.
const QUICK: Timeouts = Timeouts {
    connect: Duration::from_secs(1),
    statement: Duration::from_secs(1),
    call: Duration::from_secs(2),
};

/// Longer than any call may take under [`QUICK`]: past it, the call hung.
const HUNG: Duration = Duration::from_secs(6);

pub(crate) fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap())
}

fn quick() -> Options {
    Options {
        timeouts: QUICK,
        ..Options::default()
    }
}

pub(super) async fn connect(server: &PrivatePostgres) -> Result<Postgres, StoreError> {
    Postgres::connect(&server.url(), quick(), keyring()).await
}

/// A new server with a migrated, empty database.
pub(crate) async fn fresh() -> (PrivatePostgres, Postgres) {
    let server = PrivatePostgres::start();
    let store = connect(&server).await.unwrap();
    (server, store)
}

async fn versions(store: &Postgres) -> Vec<i32> {
    let client = store.db.client().await.unwrap();
    let rows = client
        .query("SELECT version FROM wardgate_schema ORDER BY version", &[])
        .await
        .unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

#[tokio::test]
async fn migrations_run_once_also_when_two_replicas_start_together() {
    let server = PrivatePostgres::start();
    let (first, second) = tokio::join!(connect(&server), connect(&server));
    let (first, _second) = (first.unwrap(), second.unwrap());
    let every: Vec<i32> = (1..=migrations::IDENTITY.known()).collect();
    assert_eq!(versions(&first).await, every);
    let again = connect(&server).await.unwrap();
    assert_eq!(versions(&again).await, every, "a second start is a no-op");
    let alice = crate::identity::User::new(UserId::from_bytes([1; 16]), "alice", 0);
    again.create(alice).await.unwrap();
}

#[tokio::test]
async fn a_pool_opened_for_a_command_leaves_the_schema_alone() {
    let server = PrivatePostgres::start();
    let opened = Postgres::open(&server.url(), quick(), keyring()).unwrap();
    let client = opened.db.client().await.unwrap();
    let schema = client
        .query_opt(
            "SELECT 1 FROM pg_tables WHERE tablename = 'wardgate_schema'",
            &[],
        )
        .await
        .unwrap();
    assert!(schema.is_none(), "opening migrated the database");
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused_by_both_versions() {
    let (server, store) = fresh().await;
    let newer = migrations::IDENTITY.known() + 1;
    let client = store.db.client().await.unwrap();
    client
        .execute(
            "INSERT INTO wardgate_schema (version) VALUES ($1)",
            &[&newer],
        )
        .await
        .unwrap();
    let Err(refused) = connect(&server).await else {
        panic!("a newer schema was accepted");
    };
    let text = refused.to_string();
    assert!(matches!(refused, StoreError::Storage(_)), "{text}");
    assert!(
        text.contains(&format!("version {newer}"))
            && text.contains(&format!("version {}", migrations::IDENTITY.known())),
        "{text}"
    );
}

#[tokio::test]
async fn the_password_may_come_apart_from_the_url_and_no_error_repeats_it() {
    let server = PrivatePostgres::start();
    let password = |text: &str| Options {
        password: Some(zeroize::Zeroizing::new(text.to_owned())),
        ..quick()
    };
    let url = server.url_without_password();
    let store = Postgres::connect(&url, password(PrivatePostgres::PASSWORD), keyring());
    store.await.unwrap();

    let wrong = "Wrong-Password-4711";
    let Err(refused) = Postgres::connect(&url, password(wrong), keyring()).await else {
        panic!("a wrong password was accepted");
    };
    let text = refused.to_string();
    assert!(text.contains("28P01"), "authentication failed: {text}");
    assert!(!text.contains(wrong), "{text}");
    let in_url = url.replace("wardgate@", &format!("wardgate:{wrong}@"));
    let Err(refused) = Postgres::connect(&in_url, quick(), keyring()).await else {
        panic!("a wrong password was accepted");
    };
    assert!(!refused.to_string().contains(wrong), "{refused}");
    let broken = in_url.replace("127.0.0.1", "127.0.0.1:x");
    let Err(refused) = Postgres::connect(&broken, quick(), keyring()).await else {
        panic!("a broken URL was accepted");
    };
    assert!(!refused.to_string().contains(wrong), "{refused}");
}

#[tokio::test]
async fn a_url_that_asks_for_tls_never_gets_a_plain_connection() {
    let server = PrivatePostgres::start();
    // The private server has no TLS: a URL that asks for it must fail, not fall back.
    for mode in ["require", "verify-full"] {
        let url = format!("{}?sslmode={mode}", server.url());
        let connected = Postgres::connect(&url, quick(), keyring()).await;
        assert!(matches!(connected, Err(StoreError::Storage(_))), "{mode}");
    }
    let options = Options {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..quick()
    };
    let Err(refused) = Postgres::connect(&server.url(), options, keyring()).await else {
        panic!("a CA file without TLS was accepted");
    };
    assert!(
        refused.to_string().contains("does not ask for TLS"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_stopped_server_fails_calls_quickly_and_the_same_store_recovers() {
    let (server, store) = fresh().await;
    let alice = crate::identity::User::new(UserId::from_bytes([1; 16]), "alice", 0);
    store.create(alice.clone()).await.unwrap();
    server.stop();
    for _ in 0..2 {
        let answer = tokio::time::timeout(HUNG, store.user(alice.id)).await;
        let answer = answer.expect("a call to a stopped server hung");
        assert!(matches!(answer, Err(StoreError::Storage(_))), "{answer:?}");
    }
    server.start_again();
    assert_eq!(store.user(alice.id).await.unwrap().name, "alice");
}

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_fails_the_start_in_bounded_time() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let url = format!("postgres://wardgate@127.0.0.1:{port}/wardgate");
    let started = tokio::time::timeout(HUNG, Postgres::connect(&url, quick(), keyring())).await;
    let started = started.expect("the start hung on a silent server");
    assert!(matches!(started, Err(StoreError::Storage(_))));
    held.abort();
}

#[tokio::test]
async fn a_statement_that_waits_on_a_lock_gives_up_at_the_statement_timeout() {
    let (_server, store) = fresh().await;
    let mut holder = store.db.client().await.unwrap();
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let answer = tokio::time::timeout(HUNG, store.user(UserId::from_bytes([1; 16]))).await;
    let answer = answer.expect("a call waiting on a lock hung");
    let Err(StoreError::Storage(text)) = answer else {
        panic!("{answer:?}");
    };
    assert!(text.contains("57014"), "the server cancelled it: {text}");
    tx.rollback().await.unwrap();
}
