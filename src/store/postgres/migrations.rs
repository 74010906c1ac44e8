//! The schema, as an ordered list of migrations applied at start.
//!
//! Every replica runs [`migrate`] when it connects: in one transaction, under an advisory lock,
//! so that two replicas starting together apply each migration once and never see half of one.
//! A database whose schema is newer than this binary's list is refused: an older binary would
//! write rows that a newer schema's rules (or its readers) do not expect. Migrations are only
//! ever appended; a released one is never edited.

use deadpool_postgres::Client;

use crate::identity::StoreError;

/// Migration `n` (from 1) is `MIGRATIONS[n - 1]`.
pub(super) const MIGRATIONS: &[&str] = &[
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

/// The advisory lock that serializes migrations across replicas ("wardgate" in ASCII).
const LOCK: i64 = 0x7761_7264_6761_7465;

/// The version this binary brings a database to.
pub(super) const KNOWN: i32 = MIGRATIONS.len() as i32;

/// Brings the schema up to [`KNOWN`], or refuses a newer one.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS wardgate_schema (version integer PRIMARY KEY)")
        .await?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM wardgate_schema", &[])
        .await?
        .get(0);
    if found > KNOWN {
        return Err(StoreError::Storage(format!(
            "the PostgreSQL schema is at version {found}, newer than this binary knows (version \
             {KNOWN}): run a Wardgate release that knows it"
        )));
    }
    for (version, migration) in (1..).zip(MIGRATIONS).filter(|(v, _)| *v > found) {
        tx.batch_execute(migration).await?;
        tx.execute(
            "INSERT INTO wardgate_schema (version) VALUES ($1)",
            &[&version],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
