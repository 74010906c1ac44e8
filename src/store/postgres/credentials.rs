//! [`Credentials`] in PostgreSQL, sealed as the embedded backend seals them: the TOTP seed for
//! its user, a WebAuthn credential for its user and credential id, so that a sealed value
//! moved to another row does not open. Sealing and opening happen here, in the gateway; the
//! database sees ciphertext only.
//!
//! Each use-once check is one statement that both checks and sets, under the row lock that
//! PostgreSQL takes for an `UPDATE`: a racing second update waits for the first, re-reads the
//! row and finds the step, counter or code already spent. The statement also says whether the
//! row exists, so a replay (`false`) is told from a missing factor (`NotFound`) without a
//! second, racy read.

use tokio_postgres::Row;
use tokio_postgres::types::Json;
use zeroize::Zeroizing;

use super::{Postgres, Violation, bigint, unsigned, violation};
use crate::identity::embedded::webauthn_key;
use crate::identity::{
    Purpose, RecoveryCode, StoreError, Totp, TotpParams, UserId, WebAuthnCredential, WebAuthnUse,
};
use crate::store::Pending;
use crate::store::credentials::Credentials;

/// A write that names a user the store does not hold is `NotFound`, as in the embedded store.
fn missing_user(error: tokio_postgres::Error) -> StoreError {
    match violation(&error) {
        Some(Violation::MissingUser) => StoreError::NotFound("user"),
        _ => error.into(),
    }
}

/// Whether a check-and-set statement found its row, and whether it changed it.
fn found_and_set(row: &Row) -> Result<(bool, bool), StoreError> {
    Ok((row.try_get("found")?, row.try_get("set")?))
}

impl Credentials for Postgres {
    fn set_totp(
        &self,
        id: UserId,
        seed: Zeroizing<Vec<u8>>,
        params: TotpParams,
        last_used_step: u64,
    ) -> Pending<'_, ()> {
        let sealed = self.keyring.seal(Purpose::TotpSeed, id.as_bytes(), &seed);
        self.db.run(async move {
            let (sealed, step) = (sealed?, bigint(last_used_step)?);
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached(
                    "INSERT INTO totp (user_id, seed, params, last_used_step) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (user_id) DO UPDATE SET seed = excluded.seed, \
                     params = excluded.params, last_used_step = excluded.last_used_step",
                )
                .await?;
            let id = id.as_bytes().as_slice();
            client
                .execute(&statement, &[&id, &sealed, &Json(params), &step])
                .await
                .map_err(missing_user)?;
            Ok(())
        })
    }

    fn totp(&self, id: UserId) -> Pending<'_, Option<Totp>> {
        self.db.run(async move {
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached("SELECT seed, params, last_used_step FROM totp WHERE user_id = $1")
                .await?;
            let Some(row) = client
                .query_opt(&statement, &[&id.as_bytes().as_slice()])
                .await?
            else {
                return Ok(None);
            };
            let sealed: &[u8] = row.try_get("seed")?;
            let Json(params) = row.try_get::<_, Json<TotpParams>>("params")?;
            Ok(Some(Totp {
                seed: self
                    .keyring
                    .open(Purpose::TotpSeed, id.as_bytes(), sealed)?,
                params: Some(params),
                last_used_step: unsigned("totp.last_used_step", row.try_get("last_used_step")?)?,
            }))
        })
    }

    fn advance_totp_step(&self, id: UserId, step: u64) -> Pending<'_, bool> {
        self.db.run(async move {
            let step = bigint(step)?;
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached(
                    "WITH advanced AS (UPDATE totp SET last_used_step = $2 \
                     WHERE user_id = $1 AND last_used_step < $2 RETURNING 1) \
                     SELECT EXISTS (SELECT 1 FROM totp WHERE user_id = $1) AS found, \
                     EXISTS (SELECT 1 FROM advanced) AS set",
                )
                .await?;
            let row = client
                .query_one(&statement, &[&id.as_bytes().as_slice(), &step])
                .await?;
            match found_and_set(&row)? {
                (false, _) => Err(StoreError::NotFound("TOTP seed")),
                (true, advanced) => Ok(advanced),
            }
        })
    }

    fn delete_totp(&self, id: UserId) -> Pending<'_, ()> {
        self.db.run(async move {
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached("DELETE FROM totp WHERE user_id = $1")
                .await?;
            match client
                .execute(&statement, &[&id.as_bytes().as_slice()])
                .await?
            {
                0 => Err(StoreError::NotFound("TOTP seed")),
                _ => Ok(()),
            }
        })
    }

    fn add_webauthn(&self, id: UserId, credential: WebAuthnCredential) -> Pending<'_, ()> {
        let owner = webauthn_key(id, &credential.credential_id);
        let sealed = self
            .keyring
            .seal(Purpose::WebAuthnCredential, &owner, &credential.credential);
        self.db.run(async move {
            let sealed = sealed?;
            let created = bigint(credential.created)?;
            let last_used = credential.last_used.map(bigint).transpose()?;
            let sign_count = i64::from(credential.sign_count);
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached(
                    "INSERT INTO webauthn (user_id, credential_id, credential, created, \
                     last_used, sign_count, backup_eligible, backup_state) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .await?;
            let inserted = client
                .execute(
                    &statement,
                    &[
                        &id.as_bytes().as_slice(),
                        &credential.credential_id,
                        &sealed,
                        &created,
                        &last_used,
                        &sign_count,
                        &credential.backup_eligible,
                        &credential.backup_state,
                    ],
                )
                .await;
            match inserted {
                Ok(_) => Ok(()),
                Err(error) => Err(match violation(&error) {
                    Some(Violation::Unique(_)) => {
                        StoreError::Conflict("WebAuthn credential".into())
                    }
                    _ => missing_user(error),
                }),
            }
        })
    }

    fn webauthn_credentials(&self, id: UserId) -> Pending<'_, Vec<WebAuthnCredential>> {
        self.db.run(async move {
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT credential_id, credential, created, last_used, sign_count, \
                     backup_eligible, backup_state FROM webauthn WHERE user_id = $1 \
                     ORDER BY credential_id",
                )
                .await?;
            let rows = client
                .query(&statement, &[&id.as_bytes().as_slice()])
                .await?;
            rows.iter().map(|row| self.open_webauthn(id, row)).collect()
        })
    }

    fn record_webauthn_use(
        &self,
        id: UserId,
        credential_id: Vec<u8>,
        used: WebAuthnUse,
        now: u64,
    ) -> Pending<'_, bool> {
        self.db.run(async move {
            let (now, count) = (bigint(now)?, i64::from(used.sign_count));
            let client = self.db.client().await?;
            // Forward only, unless both sides are 0 (an authenticator without a counter).
            let statement = client
                .prepare_cached(
                    "WITH recorded AS (UPDATE webauthn SET sign_count = $3, \
                     backup_eligible = $4, backup_state = $5, last_used = $6 \
                     WHERE user_id = $1 AND credential_id = $2 \
                     AND (sign_count < $3 OR (sign_count = 0 AND $3 = 0)) RETURNING 1) \
                     SELECT EXISTS (SELECT 1 FROM webauthn \
                     WHERE user_id = $1 AND credential_id = $2) AS found, \
                     EXISTS (SELECT 1 FROM recorded) AS set",
                )
                .await?;
            let row = client
                .query_one(
                    &statement,
                    &[
                        &id.as_bytes().as_slice(),
                        &credential_id,
                        &count,
                        &used.backup_eligible,
                        &used.backup_state,
                        &now,
                    ],
                )
                .await?;
            match found_and_set(&row)? {
                (false, _) => Err(StoreError::NotFound("WebAuthn credential")),
                (true, recorded) => Ok(recorded),
            }
        })
    }

    fn delete_webauthn(&self, id: UserId, credential_id: Vec<u8>) -> Pending<'_, ()> {
        self.db.run(async move {
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached("DELETE FROM webauthn WHERE user_id = $1 AND credential_id = $2")
                .await?;
            match client
                .execute(&statement, &[&id.as_bytes().as_slice(), &credential_id])
                .await?
            {
                0 => Err(StoreError::NotFound("WebAuthn credential")),
                _ => Ok(()),
            }
        })
    }

    fn set_recovery_codes(&self, id: UserId, hashes: Vec<String>) -> Pending<'_, ()> {
        self.db.run(async move {
            let positions: Vec<i32> = (0..).take(hashes.len()).collect();
            let id = id.as_bytes().as_slice();
            let mut client = self.db.client().await?;
            let tx = client.transaction().await?;
            Postgres::lock_user(&tx, id).await?;
            tx.execute("DELETE FROM recovery_codes WHERE user_id = $1", &[&id])
                .await?;
            tx.execute(
                "INSERT INTO recovery_codes (user_id, position, hash, used) \
                 SELECT $1, position, hash, false FROM unnest($2::integer[], $3::text[]) \
                 AS code (position, hash)",
                &[&id, &positions, &hashes],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn recovery_codes(&self, id: UserId) -> Pending<'_, Vec<RecoveryCode>> {
        self.db.run(async move {
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT hash, used FROM recovery_codes WHERE user_id = $1 ORDER BY position",
                )
                .await?;
            let rows = client
                .query(&statement, &[&id.as_bytes().as_slice()])
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(RecoveryCode {
                        hash: row.try_get("hash")?,
                        used: row.try_get("used")?,
                    })
                })
                .collect()
        })
    }

    fn use_recovery_code(&self, id: UserId, hash: String) -> Pending<'_, bool> {
        self.db.run(async move {
            let client = self.db.client().await?;
            // The first code with this hash, as the embedded store finds it; spent only if
            // unused, re-checked on the locked row.
            let statement = client
                .prepare_cached(
                    "WITH code AS (SELECT min(position) AS position FROM recovery_codes \
                     WHERE user_id = $1 AND hash = $2), \
                     spent AS (UPDATE recovery_codes SET used = true \
                     WHERE user_id = $1 AND position = (SELECT position FROM code) AND NOT used \
                     RETURNING 1) \
                     SELECT (SELECT position FROM code) IS NOT NULL AS found, \
                     EXISTS (SELECT 1 FROM spent) AS set",
                )
                .await?;
            let row = client
                .query_one(&statement, &[&id.as_bytes().as_slice(), &hash])
                .await?;
            match found_and_set(&row)? {
                (false, _) => Err(StoreError::NotFound("recovery code")),
                (true, spent) => Ok(spent),
            }
        })
    }
}

impl Postgres {
    fn open_webauthn(&self, id: UserId, row: &Row) -> Result<WebAuthnCredential, StoreError> {
        let credential_id: Vec<u8> = row.try_get("credential_id")?;
        let sealed: &[u8] = row.try_get("credential")?;
        let owner = webauthn_key(id, &credential_id);
        let sign_count = row.try_get::<_, i64>("sign_count")?;
        Ok(WebAuthnCredential {
            credential: self
                .keyring
                .open(Purpose::WebAuthnCredential, &owner, sealed)?,
            created: unsigned("webauthn.created", row.try_get("created")?)?,
            last_used: row
                .try_get::<_, Option<i64>>("last_used")?
                .map(|at| unsigned("webauthn.last_used", at))
                .transpose()?,
            sign_count: u32::try_from(sign_count)
                .map_err(|_| StoreError::Corrupt("webauthn.sign_count: not a u32".into()))?,
            backup_eligible: row.try_get("backup_eligible")?,
            backup_state: row.try_get("backup_state")?,
            credential_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::fresh;
    use super::*;
    use crate::identity::User;
    use crate::store::accounts::Accounts;

    const ALICE: UserId = UserId::from_bytes([1; 16]);

    async fn with_alice() -> (super::super::private_postgres::PrivatePostgres, Postgres) {
        let (server, store) = fresh().await;
        store.create(User::new(ALICE, "alice", 0)).await.unwrap();
        (server, store)
    }

    #[tokio::test]
    async fn keeps_the_credentials_contract() {
        let (_server, store) = with_alice().await;
        crate::store::credentials::contract::kept_by(&store, ALICE).await;
    }

    #[tokio::test]
    async fn a_factor_for_a_user_the_store_does_not_hold_is_not_found() {
        let (_server, store) = fresh().await;
        let params = crate::auth::totp::TotpConfig::default().params().unwrap();
        let seed = Zeroizing::new(b"seed".to_vec());
        let stored = store.set_totp(ALICE, seed, params, 0).await;
        assert!(
            matches!(stored, Err(StoreError::NotFound("user"))),
            "{stored:?}"
        );
        let codes = store.set_recovery_codes(ALICE, vec!["h".into()]).await;
        assert!(
            matches!(codes, Err(StoreError::NotFound("user"))),
            "{codes:?}"
        );
        let step = store.advance_totp_step(ALICE, 1).await;
        assert!(matches!(step, Err(StoreError::NotFound(_))), "{step:?}");
    }

    #[tokio::test]
    async fn many_racing_uses_of_one_code_step_or_counter_win_once() {
        let (_server, store) = with_alice().await;
        let params = crate::auth::totp::TotpConfig::default().params().unwrap();
        let seed = Zeroizing::new(b"seed".to_vec());
        store.set_totp(ALICE, seed, params, 10).await.unwrap();
        store
            .set_recovery_codes(ALICE, vec!["h1".into()])
            .await
            .unwrap();
        let key = WebAuthnCredential {
            credential_id: b"cred".to_vec(),
            credential: b"blob".to_vec().into(),
            created: 0,
            last_used: None,
            sign_count: 1,
            backup_eligible: false,
            backup_state: false,
        };
        store.add_webauthn(ALICE, key).await.unwrap();
        let used = WebAuthnUse {
            sign_count: 2,
            backup_eligible: false,
            backup_state: false,
        };
        // Eight of each at once, on eight pooled connections.
        let store = std::sync::Arc::new(store);
        let mut racers = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let store = store.clone();
            racers.spawn(async move {
                let step = store.advance_totp_step(ALICE, 11).await.unwrap();
                let code = store.use_recovery_code(ALICE, "h1".into()).await.unwrap();
                let signed = store.record_webauthn_use(ALICE, b"cred".to_vec(), used, 5);
                [step, code, signed.await.unwrap()]
            });
        }
        let mut wins = [0; 3];
        for won in racers.join_all().await {
            for (count, won) in wins.iter_mut().zip(won) {
                *count += usize::from(won);
            }
        }
        assert_eq!(
            wins,
            [1, 1, 1],
            "TOTP step, recovery code, WebAuthn counter"
        );
    }

    #[tokio::test]
    async fn the_sealed_columns_hold_no_plaintext() {
        let (_server, store) = with_alice().await;
        let seed = b"SEED-SEED-SEED-SEED-1234".to_vec();
        let blob = b"WEBAUTHN-CREDENTIAL-BLOB-5678".to_vec();
        let token = b"ENROLLMENT-TOKEN-9012".to_vec();
        let params = crate::auth::totp::TotpConfig::default().params().unwrap();
        let plain_seed = Zeroizing::new(seed.clone());
        store.set_totp(ALICE, plain_seed, params, 0).await.unwrap();
        let key = WebAuthnCredential {
            credential_id: b"cred".to_vec(),
            credential: blob.clone().into(),
            created: 0,
            last_used: None,
            sign_count: 0,
            backup_eligible: false,
            backup_state: false,
        };
        store.add_webauthn(ALICE, key).await.unwrap();
        store
            .create_enrollment_token(ALICE, &token, 10)
            .await
            .unwrap();
        // Every column of every table, as a DBA (or a dump) sees it.
        let client = store.db.client().await.unwrap();
        let mut raw = Vec::new();
        for table in ["users", "totp", "webauthn", "enrollment_tokens"] {
            let sql = format!("SELECT convert_to(t::text, 'UTF8') FROM {table} t");
            for row in client.query(&sql, &[]).await.unwrap() {
                raw.extend_from_slice(row.get::<_, &[u8]>(0));
            }
        }
        let contains = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
        assert!(contains(b"alice"), "the test reads the rows");
        for secret in [&seed, &blob, &token] {
            let mut hex = String::new();
            crate::identity::seal::hex_encode_into(secret, &mut hex);
            for form in [secret.as_slice(), hex.as_bytes()] {
                assert!(!contains(form), "{}", String::from_utf8_lossy(form));
            }
        }
        let opened = store.totp(ALICE).await.unwrap().unwrap();
        assert_eq!(opened.seed.as_slice(), seed.as_slice());
    }
}
