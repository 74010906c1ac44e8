//! The schema, as an ordered list of migrations applied at start.
//!
//! Every replica runs [`migrate`] when it connects: in one transaction, under an advisory lock,
//! so that two replicas starting together apply each migration once and never see half of one.
//! A database whose schema is newer than this binary's list is refused: an older binary would
//! write rows that a newer schema's rules (or its readers) do not expect. Migrations are only
//! ever appended; a released one is never edited.

use deadpool_postgres::Client;

use crate::identity::StoreError;

/// One database's schema: the table that records which of its migrations were applied, the
/// advisory lock that serializes them across replicas, and the migrations (`n`, from 1, is
/// `migrations[n - 1]`).
pub struct Schema {
    pub table: &'static str,
    pub lock: i64,
    pub migrations: &'static [&'static str],
}

impl Schema {
    /// The version this binary brings a database to.
    pub const fn known(&self) -> i32 {
        self.migrations.len() as i32
    }
}

/// The identity side: accounts, credentials, relations, shared keys ("wardgate" in ASCII for
/// the lock).
pub const IDENTITY: Schema = Schema {
    table: "wardgate_schema",
    lock: 0x7761_7264_6761_7465,
    migrations: MIGRATIONS,
};

const MIGRATIONS: &[&str] = &[
    // 1: the identity side of the state layer.
    r#"
    CREATE TABLE users (
        id bytea PRIMARY KEY,
        name text NOT NULL,
        -- `identity::embedded::fold_name` of `name`: the uniqueness rule.
        folded_name text NOT NULL CONSTRAINT users_folded_name_key UNIQUE,
        email text,
        roles text[] NOT NULL,
        disabled boolean NOT NULL,
        password_hash text,
        mfa_required_enrollment boolean NOT NULL,
        created bigint NOT NULL
    );
    CREATE TABLE enrollment_tokens (
        -- Keyed hash of the token (`Keyring::token_hash`), never the token.
        hash bytea PRIMARY KEY,
        user_id bytea NOT NULL REFERENCES users ON DELETE CASCADE,
        expires bigint NOT NULL
    );
    CREATE INDEX enrollment_tokens_user ON enrollment_tokens (user_id);
    CREATE TABLE totp (
        user_id bytea PRIMARY KEY REFERENCES users ON DELETE CASCADE,
        -- Sealed (`Purpose::TotpSeed`, owner: the user id).
        seed bytea NOT NULL,
        params jsonb NOT NULL,
        last_used_step bigint NOT NULL
    );
    CREATE TABLE webauthn (
        user_id bytea NOT NULL REFERENCES users ON DELETE CASCADE,
        credential_id bytea NOT NULL,
        -- Sealed (`Purpose::WebAuthnCredential`, owner: user id ++ credential id).
        credential bytea NOT NULL,
        created bigint NOT NULL,
        last_used bigint,
        sign_count bigint NOT NULL,
        backup_eligible boolean NOT NULL,
        backup_state boolean NOT NULL,
        PRIMARY KEY (user_id, credential_id)
    );
    CREATE TABLE recovery_codes (
        user_id bytea NOT NULL REFERENCES users ON DELETE CASCADE,
        position integer NOT NULL,
        -- A hash of the code, never the code.
        hash text NOT NULL,
        used boolean NOT NULL,
        PRIMARY KEY (user_id, position)
    );
    -- Links and requests may name users this store does not hold (imported care teams).
    CREATE TABLE care_team (
        user_id bytea NOT NULL,
        patient text COLLATE "C" NOT NULL,
        until bigint,
        PRIMARY KEY (user_id, patient)
    );
    CREATE TABLE access_requests (
        id bytea PRIMARY KEY,
        requester bytea NOT NULL,
        patient text NOT NULL,
        created bigint NOT NULL,
        request jsonb NOT NULL
    );
    CREATE INDEX access_requests_requester ON access_requests (requester, patient);
    CREATE TABLE shared_keys (
        name text PRIMARY KEY,
        -- Sealed under the identity keyring.
        sealed bytea NOT NULL
    );
    "#,
];

/// Brings `schema` up to its last migration, or refuses a newer one.
pub(super) async fn migrate(client: &mut Client, schema: &Schema) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&schema.lock])
        .await?;
    // The table name is one of this binary's constants, never input.
    let table = schema.table;
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (version integer PRIMARY KEY)"
    ))
    .await?;
    let found: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {table}"),
            &[],
        )
        .await?
        .get(0);
    let known = schema.known();
    if found > known {
        return Err(StoreError::Storage(format!(
            "the PostgreSQL schema ({table}) is at version {found}, newer than this binary knows \
             (version {known}): run a Wardgate release that knows it"
        )));
    }
    let insert = format!("INSERT INTO {table} (version) VALUES ($1)");
    for (version, migration) in (1..).zip(schema.migrations).filter(|(v, _)| *v > found) {
        tx.batch_execute(migration).await?;
        tx.execute(&insert, &[&version]).await?;
    }
    tx.commit().await?;
    Ok(())
}
