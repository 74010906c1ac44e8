//! [`Accounts`] in PostgreSQL: users by id and by folded name, and enrollment tokens by keyed
//! hash. A new token replaces the user's older ones in a transaction that first locks the
//! user's row, so two links issued at once cannot both survive; a token is spent by one
//! `DELETE … RETURNING`, which of two racing uses only one can see.

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{Postgres, Violation, bigint, unsigned, user_id, violation};
use crate::identity::embedded::fold_name;
use crate::identity::{StoreError, User, UserId};
use crate::store::Pending;
use crate::store::accounts::Accounts;

const COLUMNS: &str =
    "id, name, email, roles, disabled, password_hash, mfa_required_enrollment, created";

fn user_from(row: &Row) -> Result<User, StoreError> {
    Ok(User {
        id: user_id("users.id", row.try_get("id")?)?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        roles: row.try_get("roles")?,
        disabled: row.try_get("disabled")?,
        password_hash: row.try_get("password_hash")?,
        mfa_required_enrollment: row.try_get("mfa_required_enrollment")?,
        created: unsigned("users.created", row.try_get("created")?)?,
    })
}

impl Postgres {
    /// Sets one column of a user's row; `NotFound` when there is no such user.
    fn update_user<'a>(
        &'a self,
        id: UserId,
        sql: &'static str,
        value: Box<dyn ToSql + Send + Sync>,
    ) -> Pending<'a, ()> {
        self.db.run(async move {
            let client = self.db.client().await?;
            let statement = client.prepare_cached(sql).await?;
            match client
                .execute(&statement, &[&id.as_bytes().as_slice(), &*value])
                .await?
            {
                0 => Err(StoreError::NotFound("user")),
                _ => Ok(()),
            }
        })
    }
}

impl Accounts for Postgres {
    fn create(&self, user: User) -> Pending<'_, ()> {
        self.db.run(async move {
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached(
                    "INSERT INTO users (id, name, folded_name, email, roles, disabled, \
                     password_hash, mfa_required_enrollment, created) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .await?;
            let created = bigint(user.created)?;
            let inserted = client
                .execute(
                    &statement,
                    &[
                        &user.id.as_bytes().as_slice(),
                        &user.name,
                        &fold_name(&user.name),
                        &user.email,
                        &user.roles,
                        &user.disabled,
                        &user.password_hash,
                        &user.mfa_required_enrollment,
                        &created,
                    ],
                )
                .await;
            match inserted {
                Ok(_) => Ok(()),
                Err(error) => Err(match violation(&error) {
                    Some(Violation::Unique("users_folded_name_key")) => {
                        StoreError::Conflict(format!("user name `{}`", user.name))
                    }
                    Some(Violation::Unique(_)) => {
                        StoreError::Conflict(format!("user id {}", user.id))
                    }
                    _ => error.into(),
                }),
            }
        })
    }

    fn user(&self, id: UserId) -> Pending<'_, User> {
        self.db.run(async move {
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
                .await?;
            match client
                .query_opt(&statement, &[&id.as_bytes().as_slice()])
                .await?
            {
                Some(row) => user_from(&row),
                None => Err(StoreError::NotFound("user")),
            }
        })
    }

    fn user_by_name(&self, name: &str) -> Pending<'_, User> {
        let folded = fold_name(name);
        self.db.run(async move {
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM users WHERE folded_name = $1"
                ))
                .await?;
            match client.query_opt(&statement, &[&folded]).await? {
                Some(row) => user_from(&row),
                None => Err(StoreError::NotFound("user")),
            }
        })
    }

    fn users(&self) -> Pending<'_, Vec<User>> {
        self.db.run(async move {
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached(&format!("SELECT {COLUMNS} FROM users ORDER BY id"))
                .await?;
            let rows = client.query(&statement, &[]).await?;
            rows.iter().map(user_from).collect()
        })
    }

    fn set_disabled(&self, id: UserId, disabled: bool) -> Pending<'_, ()> {
        let sql = "UPDATE users SET disabled = $2 WHERE id = $1";
        self.update_user(id, sql, Box::new(disabled))
    }

    fn set_roles(&self, id: UserId, roles: Vec<String>) -> Pending<'_, ()> {
        let sql = "UPDATE users SET roles = $2 WHERE id = $1";
        self.update_user(id, sql, Box::new(roles))
    }

    fn set_password_hash(&self, id: UserId, phc: Option<String>) -> Pending<'_, ()> {
        let sql = "UPDATE users SET password_hash = $2 WHERE id = $1";
        self.update_user(id, sql, Box::new(phc))
    }

    fn set_mfa_required_enrollment(&self, id: UserId, required: bool) -> Pending<'_, ()> {
        let sql = "UPDATE users SET mfa_required_enrollment = $2 WHERE id = $1";
        self.update_user(id, sql, Box::new(required))
    }

    fn create_enrollment_token(&self, id: UserId, token: &[u8], expires: u64) -> Pending<'_, ()> {
        let hash = self.keyring.token_hash(token);
        self.db.run(async move {
            let expires = bigint(expires)?;
            let id = id.as_bytes().as_slice();
            let mut client = self.db.client().await?;
            let tx = client.transaction().await?;
            // The user's row lock orders two token issues for one user.
            Postgres::lock_user(&tx, id).await?;
            let insert = "INSERT INTO enrollment_tokens (hash, user_id, expires) \
                          VALUES ($1, $2, $3)";
            let hash = hash.as_slice();
            if let Err(error) = tx.execute(insert, &[&hash, &id, &expires]).await {
                return Err(match violation(&error) {
                    Some(Violation::Unique(_)) => StoreError::Conflict("enrollment token".into()),
                    _ => error.into(),
                });
            }
            tx.execute(
                "DELETE FROM enrollment_tokens WHERE user_id = $1 AND hash <> $2",
                &[&id, &hash],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn enrollment_token_user(&self, token: &[u8], now: u64) -> Pending<'_, Option<UserId>> {
        let hashes = token_hashes(self, token);
        self.db.run(async move {
            let now = bigint(now)?;
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT user_id FROM enrollment_tokens WHERE hash = ANY($1) AND expires > $2",
                )
                .await?;
            match client.query_opt(&statement, &[&hashes, &now]).await? {
                Some(row) => Ok(Some(user_id("enrollment_tokens.user_id", row.try_get(0)?)?)),
                None => Ok(None),
            }
        })
    }

    fn consume_enrollment_token(&self, token: &[u8], now: u64) -> Pending<'_, Option<UserId>> {
        let hashes = token_hashes(self, token);
        self.db.run(async move {
            let client = self.db.client().await?;
            // Deleted whether valid or expired: a token works once, and an expired one never.
            let statement = client
                .prepare_cached(
                    "DELETE FROM enrollment_tokens WHERE hash = ANY($1) RETURNING user_id, expires",
                )
                .await?;
            match client.query_opt(&statement, &[&hashes]).await? {
                Some(row) => {
                    let expires = unsigned("enrollment_tokens.expires", row.try_get(1)?)?;
                    let user = user_id("enrollment_tokens.user_id", row.try_get(0)?)?;
                    Ok((now < expires).then_some(user))
                }
                None => Ok(None),
            }
        })
    }
}

/// The token's keyed hash under every key of the ring: a link issued before a key rotation
/// still works.
fn token_hashes(store: &Postgres, token: &[u8]) -> Vec<Vec<u8>> {
    let hashes = store.keyring.token_hashes(token);
    hashes.iter().map(|hash| hash.to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::fresh;

    #[tokio::test]
    async fn keeps_the_accounts_contract() {
        let (_server, store) = fresh().await;
        crate::store::accounts::contract::kept_by(&store).await;
    }
}
