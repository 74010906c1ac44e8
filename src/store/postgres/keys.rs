//! [`SharedKeys`] in PostgreSQL: the assertion signing key and the admin token, one row each
//! in `shared_keys`, sealed under the identity keyring (which every replica holds: it opens
//! the second factors too). A missing key is created by `INSERT … ON CONFLICT DO NOTHING` and
//! read back, so of two replicas starting at once one key wins and both use it.

use zeroize::Zeroizing;

use crate::assertion::{AssertionKey, AssertionKeyError};
use crate::identity::{Purpose, StoreError};
use crate::store::keys::{AdminToken, AdminTokenError, Loading, SharedKeys};

use super::Postgres;

/// The row names, which are also the seal's owner: a sealed key cannot pass for the other.
const ASSERTION: &str = "assertion-key";
const ADMIN_TOKEN: &str = "admin-token";

impl Postgres {
    /// The opened secret named `name`, created from `fresh` first when there is none; and
    /// whether this call created it.
    async fn shared_secret(
        &self,
        name: &'static str,
        fresh: impl FnOnce() -> Result<Zeroizing<Vec<u8>>, StoreError> + Send,
    ) -> Result<(Zeroizing<Vec<u8>>, bool), StoreError> {
        let client = self.db.client().await?;
        let read = "SELECT sealed FROM shared_keys WHERE name = $1";
        let mut created = false;
        let row = match client.query_opt(read, &[&name]).await? {
            Some(row) => row,
            None => {
                let sealed = self
                    .keyring
                    .seal(Purpose::SharedKey, name.as_bytes(), &fresh()?)?;
                created = client
                    .execute(
                        "INSERT INTO shared_keys (name, sealed) VALUES ($1, $2) \
                         ON CONFLICT (name) DO NOTHING",
                        &[&name, &sealed],
                    )
                    .await?
                    == 1;
                client.query_one(read, &[&name]).await?
            }
        };
        let sealed: Vec<u8> = row.try_get("sealed")?;
        let opened = self
            .keyring
            .open(Purpose::SharedKey, name.as_bytes(), &sealed)?;
        Ok((opened, created))
    }
}

impl Postgres {
    /// Takes over the embedded store's keys (`wardgate migrate`), so that upstreams keep
    /// trusting the assertions and operators keep their token; refused (`Conflict`) when the
    /// database already holds a key of that name.
    pub async fn adopt_keys(
        &self,
        assertion: &[u8],
        admin_token: Option<&AdminToken>,
    ) -> Result<(), StoreError> {
        let mut keys = vec![(ASSERTION, assertion)];
        keys.extend(admin_token.map(|token| (ADMIN_TOKEN, token.expose().as_bytes())));
        let client = self.db.client().await?;
        for (name, secret) in keys {
            let sealed = self
                .keyring
                .seal(Purpose::SharedKey, name.as_bytes(), secret)?;
            client
                .execute(
                    "INSERT INTO shared_keys (name, sealed) VALUES ($1, $2)",
                    &[&name, &sealed],
                )
                .await
                .map_err(|error| match super::violation(&error) {
                    Some(_) => StoreError::Conflict(format!("the shared key {name}")),
                    None => error.into(),
                })?;
        }
        Ok(())
    }
}

impl SharedKeys for Postgres {
    fn assertion_key(&self) -> Loading<'_, (AssertionKey, bool), AssertionKeyError> {
        Box::pin(async move {
            let shared = |error: StoreError| AssertionKeyError::Shared(error.to_string());
            let generated = |_| StoreError::Storage("the key could not be generated".into());
            let (der, created) = self
                .db
                .run(self.shared_secret(ASSERTION, || {
                    AssertionKey::generate()
                        .map(|(_, der)| der)
                        .map_err(generated)
                }))
                .await
                .map_err(shared)?;
            let key = AssertionKey::from_pkcs8(&der)
                .map_err(|reason| shared(StoreError::Corrupt(reason.into())))?;
            Ok((key, created))
        })
    }

    fn admin_token(&self) -> Loading<'_, AdminToken, AdminTokenError> {
        Box::pin(async move {
            let shared = |error: StoreError| AdminTokenError::Shared(error.to_string());
            let (text, _) = self
                .db
                .run(self.shared_secret(ADMIN_TOKEN, || {
                    let token = AdminToken::generate(&mut rand::rng());
                    Ok(Zeroizing::new(token.expose().as_bytes().to_vec()))
                }))
                .await
                .map_err(shared)?;
            let text = std::str::from_utf8(&text).ok();
            text.and_then(AdminToken::parse).ok_or_else(|| {
                shared(StoreError::Corrupt(
                    "the admin token is not 64 hex digits".into(),
                ))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{connect, fresh};
    use super::*;

    #[tokio::test]
    async fn replicas_starting_together_hold_one_key_and_one_token() {
        let (server, _store) = fresh().await;
        let (first, second) = tokio::join!(connect(&server), connect(&server));
        let (first, second) = (first.unwrap(), second.unwrap());
        let (a, b) = tokio::join!(first.assertion_key(), second.assertion_key());
        let ((a, a_created), (b, b_created)) = (a.unwrap(), b.unwrap());
        assert_eq!(a.kid(), b.kid());
        assert_eq!(a.jwks(), b.jwks());
        assert!(a_created ^ b_created, "exactly one created it");
        let (again, created) = first.assertion_key().await.unwrap();
        assert!(!created);
        assert_eq!(again.kid(), a.kid());

        let (a, b) = tokio::join!(first.admin_token(), second.admin_token());
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.expose(), b.expose());
        assert!(b.matches(a.expose().as_bytes()));
        let client = first.db.client().await.unwrap();
        let rows = client
            .query("SELECT name, sealed FROM shared_keys ORDER BY name", &[])
            .await
            .unwrap();
        let names: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        assert_eq!(names, [ADMIN_TOKEN, ASSERTION]);
        let sealed: Vec<u8> = rows[0].get(1);
        assert!(
            !sealed
                .windows(a.expose().len())
                .any(|window| window == a.expose().as_bytes()),
            "the token is stored sealed"
        );
    }

    #[tokio::test]
    async fn a_key_that_does_not_open_is_an_error_never_replaced() {
        let (_server, store) = fresh().await;
        store.assertion_key().await.unwrap();
        store.admin_token().await.unwrap();
        let client = store.db.client().await.unwrap();
        // Each row sealed under the other's name: neither opens as what it claims to be.
        client
            .batch_execute(
                "UPDATE shared_keys SET sealed = (SELECT sealed FROM shared_keys o \
                 WHERE o.name <> shared_keys.name)",
            )
            .await
            .unwrap();
        let refused = store.assertion_key().await.unwrap_err();
        assert!(matches!(refused, AssertionKeyError::Shared(_)), "{refused}");
        let refused = store.admin_token().await.unwrap_err();
        assert!(matches!(refused, AdminTokenError::Shared(_)), "{refused}");
        let rows = client
            .query("SELECT count(*) FROM shared_keys", &[])
            .await
            .unwrap();
        assert_eq!(rows[0].get::<_, i64>(0), 2, "nothing was replaced");
    }
}
