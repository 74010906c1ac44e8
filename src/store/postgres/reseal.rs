//! Re-sealing under the current master key (`wardgate keys reseal`), after `wardgate keys
//! rotate` put a new key into the key file and every replica has that file: TOTP seeds, WebAuthn
//! credentials and the shared keys, each row whose seal names an older key, in one transaction
//! (a failure leaves every old seal, still opened by the older keys the file keeps). Rows are
//! locked as they are read, so a replica writing a factor meanwhile waits, and its write (sealed
//! under the same current key) is kept.

use super::Postgres;
use crate::identity::embedded::webauthn_key;
use crate::identity::{Purpose, StoreError};

impl Postgres {
    /// Re-seals every sealed value under the current key: how many were re-sealed.
    pub async fn reseal_all(&self) -> Result<usize, StoreError> {
        let keyring = &self.keyring;
        self.db
            .run(async {
                let mut client = self.db.client().await?;
                let tx = client.transaction().await?;
                let mut count = 0;
                for row in tx
                    .query("SELECT user_id, seed FROM totp FOR UPDATE", &[])
                    .await?
                {
                    let (id, seed): (Vec<u8>, Vec<u8>) = (row.try_get(0)?, row.try_get(1)?);
                    if let Some(sealed) = keyring.reseal(Purpose::TotpSeed, &id, &seed)? {
                        tx.execute(
                            "UPDATE totp SET seed = $2 WHERE user_id = $1",
                            &[&id, &sealed],
                        )
                        .await?;
                        count += 1;
                    }
                }
                for row in tx
                    .query(
                        "SELECT user_id, credential_id, credential FROM webauthn FOR UPDATE",
                        &[],
                    )
                    .await?
                {
                    let (id, credential_id, credential): (Vec<u8>, Vec<u8>, Vec<u8>) =
                        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                    let owner = webauthn_key(super::user_id("user_id", &id)?, &credential_id);
                    if let Some(sealed) =
                        keyring.reseal(Purpose::WebAuthnCredential, &owner, &credential)?
                    {
                        tx.execute(
                            "UPDATE webauthn SET credential = $3 \
                             WHERE user_id = $1 AND credential_id = $2",
                            &[&id, &credential_id, &sealed],
                        )
                        .await?;
                        count += 1;
                    }
                }
                for row in tx
                    .query("SELECT name, sealed FROM shared_keys FOR UPDATE", &[])
                    .await?
                {
                    let (name, sealed): (String, Vec<u8>) = (row.try_get(0)?, row.try_get(1)?);
                    if let Some(resealed) =
                        keyring.reseal(Purpose::SharedKey, name.as_bytes(), &sealed)?
                    {
                        tx.execute(
                            "UPDATE shared_keys SET sealed = $2 WHERE name = $1",
                            &[&name, &resealed],
                        )
                        .await?;
                        count += 1;
                    }
                }
                tx.commit().await?;
                Ok(count)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use zeroize::Zeroizing;

    use super::super::tests::fresh;
    use super::super::{Options, Postgres};
    use crate::identity::{Keyring, MasterKey, User, UserId, WebAuthnCredential};
    use crate::store::accounts::Accounts;
    use crate::store::credentials::Credentials;
    use crate::store::keys::SharedKeys;

    const ALICE: UserId = UserId::from_bytes([1; 16]);

    /// The keys by id: 1 is the one `fresh` seals under, 2 the new one.
    fn keyring(ids: &[u32]) -> Arc<Keyring> {
        let key = |id: u32| MasterKey::new(id, if id == 1 { [7; 32] } else { [9; 32] });
        let mut keys: Vec<MasterKey> = ids.iter().map(|id| key(*id)).collect();
        let current = keys.pop().unwrap();
        Arc::new(Keyring::new(current, keys).unwrap())
    }

    #[tokio::test]
    async fn after_the_reseal_only_the_new_key_opens_every_secret_and_a_second_finds_none() {
        let (server, old) = fresh().await;
        old.create(User::new(ALICE, "alice", 0)).await.unwrap();
        let params = crate::auth::totp::TotpConfig::default().params().unwrap();
        let seed = Zeroizing::new(b"seed".to_vec());
        old.set_totp(ALICE, seed, params, 0).await.unwrap();
        let passkey = WebAuthnCredential {
            credential_id: b"cred".to_vec(),
            credential: b"blob".to_vec().into(),
            created: 0,
            last_used: None,
            sign_count: 1,
            backup_eligible: false,
            backup_state: false,
        };
        old.add_webauthn(ALICE, passkey).await.unwrap();
        let (key, _) = old.assertion_key().await.unwrap();
        let token = old.admin_token().await.unwrap();

        let open = |keys: &[u32]| Postgres::open(&server.url(), Options::default(), keyring(keys));
        let before = open(&[2]).unwrap();
        assert!(before.totp(ALICE).await.is_err(), "key 2 opens nothing yet");
        let both = open(&[1, 2]).unwrap();
        assert_eq!(
            both.reseal_all().await.unwrap(),
            4,
            "seed, passkey, two keys"
        );
        assert_eq!(both.reseal_all().await.unwrap(), 0, "all under key 2 now");

        let new = open(&[2]).unwrap();
        let totp = new.totp(ALICE).await.unwrap().unwrap();
        assert_eq!(totp.seed.as_slice(), b"seed");
        let passkeys = new.webauthn_credentials(ALICE).await.unwrap();
        assert_eq!(passkeys[0].credential.as_slice(), b"blob");
        assert_eq!(new.assertion_key().await.unwrap().0.kid(), key.kid());
        assert_eq!(new.admin_token().await.unwrap().expose(), token.expose());
        let old_only = open(&[1]).unwrap();
        assert!(
            old_only.totp(ALICE).await.is_err(),
            "the old key alone no longer opens it"
        );
    }
}
