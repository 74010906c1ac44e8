//! The embedded identity store: one redb file, `<data dir>/identity.redb`.
//!
//! **Threat.** The data directory is the part of a deployment most likely to be copied
//! (backups, snapshots, a laptop running a demo). **Rule.** The directory is created with mode
//! 0700 and the file with 0600; secrets are sealed with the [`Keyring`] before a write
//! transaction sees them, and bearer tokens are kept only as keyed hashes, so the file never holds
//! a plaintext secret (a test reads the raw bytes to check). Records are JSON, byte strings in
//! hex. **Standard.** HIPAA 164.312(a)(2)(iv); OWASP ASVS 5 V11 and V13.
//!
//! redb locks the file for the process that opens it: while the gateway runs, another
//! `wardgate` process cannot open the store. Account management at run time goes through the
//! running gateway (its admin listener); offline commands (`wardgate keys rotate`) need the
//! gateway stopped and say so when it is not.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use unicode_normalization::UnicodeNormalization;

use super::seal::{Keyring, Purpose};
use super::store::{
    RecoveryCode, SessionKey, SessionRecord, StoreError, Totp, User, UserId, WebAuthnCredential,
    WebAuthnUse,
};
use crate::identity::TotpParams;

/// The store's file name inside the data directory.
pub const FILE_NAME: &str = "identity.redb";

/// id -> `User`
const USERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("users");
/// folded name -> id
const NAMES: TableDefinition<&str, &[u8]> = TableDefinition::new("user_names");
/// id -> `TotpRecord`
const TOTP: TableDefinition<&[u8], &[u8]> = TableDefinition::new("totp");
/// id ++ credential id -> `WebAuthnRecord`
const WEBAUTHN: TableDefinition<&[u8], &[u8]> = TableDefinition::new("webauthn");
/// id -> `Vec<RecoveryCode>`
const RECOVERY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("recovery_codes");
/// keyed token hash -> `TokenRecord`
const TOKENS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("enrollment_tokens");
/// keyed token hash -> sealed `SessionRecord`
const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TotpRecord {
    #[serde(with = "hex_bytes")]
    seed: Vec<u8>,
    /// Absent from records written before the parameters were kept: see [`Totp::params`].
    #[serde(default)]
    params: Option<TotpParams>,
    last_used_step: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebAuthnRecord {
    #[serde(with = "hex_bytes")]
    credential_id: Vec<u8>,
    #[serde(with = "hex_bytes")]
    credential: Vec<u8>,
    created: u64,
    last_used: Option<u64>,
    sign_count: u32,
    backup_eligible: bool,
    backup_state: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRecord {
    user: UserId,
    expires: u64,
}

/// The redb-backed identity store.
pub struct EmbeddedStore {
    db: Database,
    keyring: Arc<Keyring>,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) `<dir>/identity.redb`, creating `dir` with mode 0700 when missing.
    pub fn open(dir: &Path, keyring: Arc<Keyring>) -> Result<Self, StoreError> {
        let path = dir.join(FILE_NAME);
        let io =
            |error: std::io::Error| StoreError::Storage(format!("{}: {error}", path.display()));
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        // Created here, so that redb finds a file that already has the right mode.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|error| match error {
                DatabaseError::DatabaseAlreadyOpen => {
                    StoreError::Locked(path.display().to_string())
                }
                other => StoreError::Storage(format!("{}: {other}", path.display())),
            })?;
        let store = Self { db, keyring, path };
        store.write(|tx| {
            tx.open_table(USERS)?;
            tx.open_table(NAMES)?;
            tx.open_table(TOTP)?;
            tx.open_table(WEBAUTHN)?;
            tx.open_table(RECOVERY)?;
            tx.open_table(TOKENS)?;
            tx.open_table(SESSIONS)?;
            Ok(())
        })?;
        Ok(store)
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a write transaction, committed only when `f` succeeds. Also for the state
    /// layer's tables in the same file (`store::embedded`: care-team links, access requests).
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self.db.begin_write()?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    pub(crate) fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    fn update_user(&self, id: UserId, change: impl FnOnce(&mut User)) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut users = tx.open_table(USERS)?;
            let mut user: User = match users.get(id.as_bytes().as_slice())? {
                Some(value) => decode("users", value.value())?,
                None => return Err(StoreError::NotFound("user")),
            };
            change(&mut user);
            users.insert(id.as_bytes().as_slice(), encode(&user)?.as_slice())?;
            Ok(())
        })
    }

    fn seal_session(&self, key: SessionKey, record: &SessionRecord) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .keyring
            .seal(Purpose::Session, &key.0, &encode(record)?)?)
    }

    fn open_session(&self, key: SessionKey, sealed: &[u8]) -> Result<SessionRecord, StoreError> {
        let plain = self.keyring.open(Purpose::Session, &key.0, sealed)?;
        decode("sessions", &plain)
    }

    fn open_webauthn(
        &self,
        id: UserId,
        record: WebAuthnRecord,
    ) -> Result<WebAuthnCredential, StoreError> {
        let credential = self.keyring.open(
            Purpose::WebAuthnCredential,
            &webauthn_key(id, &record.credential_id),
            &record.credential,
        )?;
        Ok(WebAuthnCredential {
            credential_id: record.credential_id,
            credential,
            created: record.created,
            last_used: record.last_used,
            sign_count: record.sign_count,
            backup_eligible: record.backup_eligible,
            backup_state: record.backup_state,
        })
    }
}

/// The operations, synchronous (redb is): the store layer (`store::embedded`) runs them on the
/// blocking pool behind its async traits, whose docs state the contract each keeps.
impl EmbeddedStore {
    pub fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let folded = fold_name(&user.name);
        self.write(|tx| {
            let mut users = tx.open_table(USERS)?;
            let mut names = tx.open_table(NAMES)?;
            if names.get(folded.as_str())?.is_some() {
                return Err(StoreError::Conflict(format!("user name `{}`", user.name)));
            }
            if users.get(user.id.as_bytes().as_slice())?.is_some() {
                return Err(StoreError::Conflict(format!("user id {}", user.id)));
            }
            users.insert(user.id.as_bytes().as_slice(), encode(user)?.as_slice())?;
            names.insert(folded.as_str(), user.id.as_bytes().as_slice())?;
            Ok(())
        })
    }

    pub fn user(&self, id: UserId) -> Result<User, StoreError> {
        let tx = self.read()?;
        let users = tx.open_table(USERS)?;
        match users.get(id.as_bytes().as_slice())? {
            Some(value) => decode("users", value.value()),
            None => Err(StoreError::NotFound("user")),
        }
    }

    pub fn user_by_name(&self, name: &str) -> Result<User, StoreError> {
        let id = {
            let tx = self.read()?;
            let names = tx.open_table(NAMES)?;
            match names.get(fold_name(name).as_str())? {
                Some(value) => user_id_from("user_names", value.value())?,
                None => return Err(StoreError::NotFound("user")),
            }
        };
        self.user(id)
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let tx = self.read()?;
        let users = tx.open_table(USERS)?;
        users
            .iter()?
            .map(|entry| {
                let (_, value) = entry?;
                decode("users", value.value())
            })
            .collect()
    }

    pub fn set_disabled(&self, id: UserId, disabled: bool) -> Result<(), StoreError> {
        self.update_user(id, |user| user.disabled = disabled)
    }

    pub fn set_roles(&self, id: UserId, roles: &[String]) -> Result<(), StoreError> {
        self.update_user(id, |user| user.roles = roles.to_vec())
    }

    pub fn set_password_hash(&self, id: UserId, phc: Option<&str>) -> Result<(), StoreError> {
        self.update_user(id, |user| user.password_hash = phc.map(str::to_owned))
    }

    pub fn set_mfa_required_enrollment(
        &self,
        id: UserId,
        required: bool,
    ) -> Result<(), StoreError> {
        self.update_user(id, |user| user.mfa_required_enrollment = required)
    }

    pub fn set_totp(
        &self,
        id: UserId,
        seed: &[u8],
        params: TotpParams,
        last_used_step: u64,
    ) -> Result<(), StoreError> {
        let record = TotpRecord {
            seed: self.keyring.seal(Purpose::TotpSeed, id.as_bytes(), seed)?,
            params: Some(params),
            last_used_step,
        };
        self.write(|tx| {
            require_user(tx, id)?;
            let mut totp = tx.open_table(TOTP)?;
            totp.insert(id.as_bytes().as_slice(), encode(&record)?.as_slice())?;
            Ok(())
        })
    }

    pub fn totp(&self, id: UserId) -> Result<Option<Totp>, StoreError> {
        let record: TotpRecord = {
            let tx = self.read()?;
            let totp = tx.open_table(TOTP)?;
            match totp.get(id.as_bytes().as_slice())? {
                Some(value) => decode("totp", value.value())?,
                None => return Ok(None),
            }
        };
        let seed = self
            .keyring
            .open(Purpose::TotpSeed, id.as_bytes(), &record.seed)?;
        Ok(Some(Totp {
            seed,
            params: record.params,
            last_used_step: record.last_used_step,
        }))
    }

    pub fn advance_totp_step(&self, id: UserId, step: u64) -> Result<bool, StoreError> {
        self.write(|tx| {
            let mut totp = tx.open_table(TOTP)?;
            let mut record: TotpRecord = match totp.get(id.as_bytes().as_slice())? {
                Some(value) => decode("totp", value.value())?,
                None => return Err(StoreError::NotFound("TOTP seed")),
            };
            if step <= record.last_used_step {
                return Ok(false);
            }
            record.last_used_step = step;
            totp.insert(id.as_bytes().as_slice(), encode(&record)?.as_slice())?;
            Ok(true)
        })
    }

    pub fn delete_totp(&self, id: UserId) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut totp = tx.open_table(TOTP)?;
            match totp.remove(id.as_bytes().as_slice())? {
                Some(_) => Ok(()),
                None => Err(StoreError::NotFound("TOTP seed")),
            }
        })
    }

    pub fn add_webauthn(
        &self,
        id: UserId,
        credential: &WebAuthnCredential,
    ) -> Result<(), StoreError> {
        let key = webauthn_key(id, &credential.credential_id);
        let record = WebAuthnRecord {
            credential_id: credential.credential_id.clone(),
            credential: self.keyring.seal(
                Purpose::WebAuthnCredential,
                &key,
                &credential.credential,
            )?,
            created: credential.created,
            last_used: credential.last_used,
            sign_count: credential.sign_count,
            backup_eligible: credential.backup_eligible,
            backup_state: credential.backup_state,
        };
        self.write(|tx| {
            require_user(tx, id)?;
            let mut table = tx.open_table(WEBAUTHN)?;
            if table.get(key.as_slice())?.is_some() {
                return Err(StoreError::Conflict("WebAuthn credential".into()));
            }
            table.insert(key.as_slice(), encode(&record)?.as_slice())?;
            Ok(())
        })
    }

    pub fn webauthn_credentials(&self, id: UserId) -> Result<Vec<WebAuthnCredential>, StoreError> {
        let records: Vec<WebAuthnRecord> = {
            let tx = self.read()?;
            let table = tx.open_table(WEBAUTHN)?;
            let prefix = id.as_bytes().as_slice();
            let mut records = Vec::new();
            for entry in table.range(prefix..)? {
                let (key, value) = entry?;
                if !key.value().starts_with(prefix) {
                    break;
                }
                records.push(decode("webauthn", value.value())?);
            }
            records
        };
        records
            .into_iter()
            .map(|record| self.open_webauthn(id, record))
            .collect()
    }

    pub fn record_webauthn_use(
        &self,
        id: UserId,
        credential_id: &[u8],
        used: WebAuthnUse,
        now: u64,
    ) -> Result<bool, StoreError> {
        let key = webauthn_key(id, credential_id);
        self.write(|tx| {
            let mut table = tx.open_table(WEBAUTHN)?;
            let mut record: WebAuthnRecord = match table.get(key.as_slice())? {
                Some(value) => decode("webauthn", value.value())?,
                None => return Err(StoreError::NotFound("WebAuthn credential")),
            };
            if (used.sign_count > 0 || record.sign_count > 0)
                && used.sign_count <= record.sign_count
            {
                return Ok(false);
            }
            record.sign_count = used.sign_count;
            record.backup_eligible = used.backup_eligible;
            record.backup_state = used.backup_state;
            record.last_used = Some(now);
            table.insert(key.as_slice(), encode(&record)?.as_slice())?;
            Ok(true)
        })
    }

    pub fn delete_webauthn(&self, id: UserId, credential_id: &[u8]) -> Result<(), StoreError> {
        let key = webauthn_key(id, credential_id);
        self.write(|tx| {
            let mut table = tx.open_table(WEBAUTHN)?;
            match table.remove(key.as_slice())? {
                Some(_) => Ok(()),
                None => Err(StoreError::NotFound("WebAuthn credential")),
            }
        })
    }

    pub fn set_recovery_codes(&self, id: UserId, hashes: &[String]) -> Result<(), StoreError> {
        let codes: Vec<RecoveryCode> = hashes
            .iter()
            .map(|hash| RecoveryCode {
                hash: hash.clone(),
                used: false,
            })
            .collect();
        self.write(|tx| {
            require_user(tx, id)?;
            let mut table = tx.open_table(RECOVERY)?;
            table.insert(id.as_bytes().as_slice(), encode(&codes)?.as_slice())?;
            Ok(())
        })
    }

    pub fn recovery_codes(&self, id: UserId) -> Result<Vec<RecoveryCode>, StoreError> {
        let tx = self.read()?;
        let table = tx.open_table(RECOVERY)?;
        match table.get(id.as_bytes().as_slice())? {
            Some(value) => decode("recovery_codes", value.value()),
            None => Ok(Vec::new()),
        }
    }

    pub fn use_recovery_code(&self, id: UserId, hash: &str) -> Result<bool, StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(RECOVERY)?;
            let mut codes: Vec<RecoveryCode> = match table.get(id.as_bytes().as_slice())? {
                Some(value) => decode("recovery_codes", value.value())?,
                None => return Err(StoreError::NotFound("recovery code")),
            };
            let code = codes
                .iter_mut()
                .find(|code| bool::from(code.hash.as_bytes().ct_eq(hash.as_bytes())))
                .ok_or(StoreError::NotFound("recovery code"))?;
            if code.used {
                return Ok(false);
            }
            code.used = true;
            table.insert(id.as_bytes().as_slice(), encode(&codes)?.as_slice())?;
            Ok(true)
        })
    }

    pub fn create_enrollment_token(
        &self,
        id: UserId,
        token: &[u8],
        expires: u64,
    ) -> Result<(), StoreError> {
        let hash = self.keyring.token_hash(token);
        let record = TokenRecord { user: id, expires };
        self.write(|tx| {
            require_user(tx, id)?;
            let mut table = tx.open_table(TOKENS)?;
            if table.get(hash.as_slice())?.is_some() {
                return Err(StoreError::Conflict("enrollment token".into()));
            }
            let mut older = Vec::new();
            for entry in table.iter()? {
                let (key, value) = entry?;
                let existing: TokenRecord = decode("enrollment_tokens", value.value())?;
                if existing.user == id {
                    older.push(key.value().to_vec());
                }
            }
            for key in older {
                table.remove(key.as_slice())?;
            }
            table.insert(hash.as_slice(), encode(&record)?.as_slice())?;
            Ok(())
        })
    }

    pub fn enrollment_token_user(
        &self,
        token: &[u8],
        now: u64,
    ) -> Result<Option<UserId>, StoreError> {
        let tx = self.read()?;
        let table = tx.open_table(TOKENS)?;
        for hash in self.keyring.token_hashes(token) {
            if let Some(value) = table.get(hash.as_slice())? {
                let record: TokenRecord = decode("enrollment_tokens", value.value())?;
                return Ok((now < record.expires).then_some(record.user));
            }
        }
        Ok(None)
    }

    pub fn consume_enrollment_token(
        &self,
        token: &[u8],
        now: u64,
    ) -> Result<Option<UserId>, StoreError> {
        let hashes = self.keyring.token_hashes(token);
        self.write(|tx| {
            let mut table = tx.open_table(TOKENS)?;
            for hash in &hashes {
                // Removed whether valid or expired: a token works once, and an expired one never.
                if let Some(value) = table.remove(hash.as_slice())? {
                    let record: TokenRecord = decode("enrollment_tokens", value.value())?;
                    return Ok((now < record.expires).then_some(record.user));
                }
            }
            Ok(None)
        })
    }

    pub fn create_session(
        &self,
        token: &[u8],
        record: &SessionRecord,
    ) -> Result<SessionKey, StoreError> {
        let key = SessionKey(self.keyring.token_hash(token));
        let sealed = self.seal_session(key, record)?;
        self.write(|tx| {
            require_user(tx, record.user)?;
            let mut table = tx.open_table(SESSIONS)?;
            if table.get(key.0.as_slice())?.is_some() {
                return Err(StoreError::Conflict("session".into()));
            }
            table.insert(key.0.as_slice(), sealed.as_slice())?;
            Ok(key)
        })
    }

    pub fn session(&self, token: &[u8]) -> Result<Option<(SessionKey, SessionRecord)>, StoreError> {
        let found = {
            let tx = self.read()?;
            let table = tx.open_table(SESSIONS)?;
            let mut found = None;
            for hash in self.keyring.token_hashes(token) {
                if let Some(value) = table.get(hash.as_slice())? {
                    found = Some((SessionKey(hash), value.value().to_vec()));
                    break;
                }
            }
            found
        };
        match found {
            Some((key, sealed)) => Ok(Some((key, self.open_session(key, &sealed)?))),
            None => Ok(None),
        }
    }

    pub fn touch_session(&self, key: SessionKey, last_seen: u64) -> Result<bool, StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(SESSIONS)?;
            let mut record = match table.get(key.0.as_slice())? {
                Some(value) => self.open_session(key, value.value())?,
                None => return Ok(false),
            };
            if last_seen > record.last_seen {
                record.last_seen = last_seen;
                let sealed = self.seal_session(key, &record)?;
                table.insert(key.0.as_slice(), sealed.as_slice())?;
            }
            Ok(true)
        })
    }

    pub fn delete_session(&self, key: SessionKey) -> Result<bool, StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(SESSIONS)?;
            Ok(table.remove(key.0.as_slice())?.is_some())
        })
    }

    pub fn delete_user_sessions(&self, user: UserId) -> Result<Vec<SessionKey>, StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(SESSIONS)?;
            let mut ended = Vec::new();
            for entry in table.iter()? {
                let (key, value) = entry?;
                let key = session_key_from(key.value())?;
                if self.open_session(key, value.value())?.user == user {
                    ended.push(key);
                }
            }
            for key in &ended {
                table.remove(key.0.as_slice())?;
            }
            Ok(ended)
        })
    }

    pub fn sessions(&self) -> Result<Vec<(SessionKey, SessionRecord)>, StoreError> {
        let tx = self.read()?;
        let table = tx.open_table(SESSIONS)?;
        let mut sessions = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            let key = session_key_from(key.value())?;
            sessions.push((key, self.open_session(key, value.value())?));
        }
        Ok(sessions)
    }

    pub fn reseal_all(&self) -> Result<usize, StoreError> {
        let keyring = &self.keyring;
        self.write(|tx| {
            let mut count = 0;
            let mut totp = tx.open_table(TOTP)?;
            let mut changed = Vec::new();
            for entry in totp.iter()? {
                let (key, value) = entry?;
                let mut record: TotpRecord = decode("totp", value.value())?;
                let id = user_id_from("totp", key.value())?;
                if let Some(sealed) =
                    keyring.reseal(Purpose::TotpSeed, id.as_bytes(), &record.seed)?
                {
                    record.seed = sealed;
                    changed.push((key.value().to_vec(), encode(&record)?));
                }
            }
            count += changed.len();
            for (key, value) in changed.drain(..) {
                totp.insert(key.as_slice(), value.as_slice())?;
            }
            let mut webauthn = tx.open_table(WEBAUTHN)?;
            for entry in webauthn.iter()? {
                let (key, value) = entry?;
                let mut record: WebAuthnRecord = decode("webauthn", value.value())?;
                if let Some(sealed) =
                    keyring.reseal(Purpose::WebAuthnCredential, key.value(), &record.credential)?
                {
                    record.credential = sealed;
                    changed.push((key.value().to_vec(), encode(&record)?));
                }
            }
            count += changed.len();
            for (key, value) in changed.drain(..) {
                webauthn.insert(key.as_slice(), value.as_slice())?;
            }
            let mut sessions = tx.open_table(SESSIONS)?;
            for entry in sessions.iter()? {
                let (key, value) = entry?;
                if let Some(sealed) =
                    keyring.reseal(Purpose::Session, key.value(), value.value())?
                {
                    changed.push((key.value().to_vec(), sealed));
                }
            }
            count += changed.len();
            for (key, value) in changed {
                sessions.insert(key.as_slice(), value.as_slice())?;
            }
            Ok(count)
        })
    }
}

/// The uniqueness key of a user name: NFKC, then lower case, so `Alice`, `ALICE` and the
/// full-width `Ａｌｉｃｅ` are one name.
pub(crate) fn fold_name(name: &str) -> String {
    name.nfkc().collect::<String>().to_lowercase()
}

/// The key of a WebAuthn record, and the owner its sealed credential is bound to.
pub(crate) fn webauthn_key(id: UserId, credential_id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(16 + credential_id.len());
    key.extend_from_slice(id.as_bytes());
    key.extend_from_slice(credential_id);
    key
}

fn require_user(tx: &WriteTransaction, id: UserId) -> Result<(), StoreError> {
    match tx.open_table(USERS)?.get(id.as_bytes().as_slice())? {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound("user")),
    }
}

fn session_key_from(bytes: &[u8]) -> Result<SessionKey, StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map(SessionKey)
        .map_err(|_| StoreError::Corrupt("sessions: key is not 32 bytes".into()))
}

fn user_id_from(table: &str, bytes: &[u8]) -> Result<UserId, StoreError> {
    let bytes: [u8; 16] = bytes
        .get(..16)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("{table}: a key is not a user id")))?;
    Ok(UserId::from_bytes(bytes))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|error| StoreError::Corrupt(error.to_string()))
}

pub(crate) fn decode<T: DeserializeOwned>(table: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Corrupt(format!("{table}: {error}")))
}

macro_rules! storage_error {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(error: $error) -> Self {
                StoreError::Storage(error.to_string())
            }
        }
    )*};
}
storage_error!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Byte strings as hex in the JSON records.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::identity::seal::{hex_decode, hex_encode_into};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(bytes.len() * 2);
        hex_encode_into(bytes, &mut text);
        serializer.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut bytes = vec![0u8; text.len() / 2];
        if hex_decode(&text, &mut bytes) {
            Ok(bytes)
        } else {
            Err(serde::de::Error::custom("not hex"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::totp::{Digits, TotpAlgorithm};
    use crate::identity::seal::{MasterKey, hex_encode_into};

    fn keyring(id: u32, byte: u8) -> Arc<Keyring> {
        Arc::new(Keyring::new(MasterKey::new(id, [byte; 32]), Vec::new()).unwrap())
    }

    fn user(store: &EmbeddedStore, name: &str) -> User {
        let user = User::new(UserId::random(&mut rand::rng()), name, 1_700_000_000);
        store.create_user(&user).unwrap();
        user
    }

    fn credential(id: &[u8], blob: &[u8]) -> WebAuthnCredential {
        WebAuthnCredential {
            credential_id: id.to_vec(),
            credential: blob.to_vec().into(),
            created: 10,
            last_used: None,
            sign_count: 0,
            backup_eligible: true,
            backup_state: false,
        }
    }

    #[test]
    fn users_are_created_found_listed_and_changed() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("data"), keyring(1, 1)).unwrap();
        let alice = user(&store, "Alice");
        let bob = user(&store, "bob");
        assert_eq!(store.user(alice.id).unwrap(), alice);
        assert_eq!(store.user_by_name("ALICE").unwrap(), alice);
        assert_eq!(store.user_by_name("Ａｌｉｃｅ").unwrap(), alice);
        let mut listed = store.users().unwrap();
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(listed, vec![alice.clone(), bob]);

        let twin = User::new(UserId::random(&mut rand::rng()), "aLiCe", 1);
        assert!(matches!(
            store.create_user(&twin),
            Err(StoreError::Conflict(_))
        ));
        let same_id = User::new(alice.id, "carol", 1);
        assert!(matches!(
            store.create_user(&same_id),
            Err(StoreError::Conflict(_))
        ));

        store.set_disabled(alice.id, true).unwrap();
        store.set_roles(alice.id, &["physician".into()]).unwrap();
        store
            .set_password_hash(alice.id, Some("$argon2id$v=19$x"))
            .unwrap();
        store.set_mfa_required_enrollment(alice.id, true).unwrap();
        let changed = store.user(alice.id).unwrap();
        assert!(changed.disabled && changed.mfa_required_enrollment);
        assert_eq!(changed.roles, ["physician"]);
        assert_eq!(changed.password_hash.as_deref(), Some("$argon2id$v=19$x"));
        assert!(!format!("{changed:?}").contains("argon2id"));

        let nobody = UserId::random(&mut rand::rng());
        assert!(matches!(store.user(nobody), Err(StoreError::NotFound(_))));
        assert!(matches!(
            store.set_disabled(nobody, true),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.user_by_name("eve"),
            Err(StoreError::NotFound(_))
        ));
    }

    fn eight_digits() -> TotpParams {
        TotpParams {
            algorithm: TotpAlgorithm::Sha256,
            digits: Digits::Eight,
            period_secs: 60,
        }
    }

    #[test]
    fn totp_seed_and_replay_step() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), keyring(1, 1)).unwrap();
        let alice = user(&store, "alice");
        assert!(store.totp(alice.id).unwrap().is_none());
        store
            .set_totp(alice.id, b"0123456789abcdefghij", eight_digits(), 5)
            .unwrap();
        let totp = store.totp(alice.id).unwrap().unwrap();
        assert_eq!(totp.seed.as_slice(), b"0123456789abcdefghij");
        assert_eq!(totp.params, Some(eight_digits()));
        assert_eq!(totp.last_used_step, 5);
        assert!(!format!("{totp:?}").contains("0123"));
        assert!(!store.advance_totp_step(alice.id, 5).unwrap());
        assert!(store.advance_totp_step(alice.id, 6).unwrap());
        assert!(!store.advance_totp_step(alice.id, 6).unwrap());
        assert_eq!(store.totp(alice.id).unwrap().unwrap().last_used_step, 6);
        store.delete_totp(alice.id).unwrap();
        assert!(store.totp(alice.id).unwrap().is_none());
        assert!(matches!(
            store.delete_totp(alice.id),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn a_totp_record_from_before_parameters_were_kept_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let ring = keyring(1, 1);
        let store = EmbeddedStore::open(dir.path(), ring.clone()).unwrap();
        let alice = user(&store, "alice");
        let mut seed = String::new();
        let sealed = ring
            .seal(
                Purpose::TotpSeed,
                alice.id.as_bytes(),
                b"0123456789abcdefghij",
            )
            .unwrap();
        hex_encode_into(&sealed, &mut seed);
        let older = format!(r#"{{"seed":"{seed}","last_used_step":7}}"#);
        store
            .write(|tx| {
                let mut totp = tx.open_table(TOTP)?;
                totp.insert(alice.id.as_bytes().as_slice(), older.as_bytes())?;
                Ok(())
            })
            .unwrap();
        let totp = store.totp(alice.id).unwrap().unwrap();
        assert_eq!(
            (totp.seed.as_slice(), totp.params, totp.last_used_step),
            (b"0123456789abcdefghij".as_slice(), None, 7)
        );
        assert!(store.advance_totp_step(alice.id, 8).unwrap());
        assert_eq!(store.reseal_all().unwrap(), 0);
    }

    #[test]
    fn webauthn_credentials_are_kept_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), keyring(1, 1)).unwrap();
        let alice = user(&store, "alice");
        let bob = user(&store, "bob");
        store
            .add_webauthn(alice.id, &credential(b"c1", b"blob-1"))
            .unwrap();
        store
            .add_webauthn(alice.id, &credential(b"c2", b"blob-2"))
            .unwrap();
        store
            .add_webauthn(bob.id, &credential(b"c1", b"blob-b"))
            .unwrap();
        assert!(matches!(
            store.add_webauthn(alice.id, &credential(b"c1", b"again")),
            Err(StoreError::Conflict(_))
        ));
        let used = WebAuthnUse {
            sign_count: 42,
            backup_eligible: true,
            backup_state: true,
        };
        assert!(
            store
                .record_webauthn_use(alice.id, b"c2", used, 99)
                .unwrap()
        );
        // The same counter again (a racing login with the same signature) is not recorded.
        assert!(
            !store
                .record_webauthn_use(alice.id, b"c2", used, 100)
                .unwrap()
        );
        let listed = store.webauthn_credentials(alice.id).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].credential.as_slice(), b"blob-1");
        assert_eq!(
            (
                listed[1].sign_count,
                listed[1].backup_state,
                listed[1].last_used
            ),
            (42, true, Some(99))
        );
        store.delete_webauthn(alice.id, b"c1").unwrap();
        assert_eq!(store.webauthn_credentials(alice.id).unwrap().len(), 1);
        assert_eq!(
            store.webauthn_credentials(bob.id).unwrap()[0]
                .credential
                .as_slice(),
            b"blob-b"
        );
        assert!(matches!(
            store.delete_webauthn(alice.id, b"c1"),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn recovery_codes_work_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), keyring(1, 1)).unwrap();
        let alice = user(&store, "alice");
        store
            .set_recovery_codes(alice.id, &["h1".into(), "h2".into()])
            .unwrap();
        assert!(store.use_recovery_code(alice.id, "h1").unwrap());
        assert!(!store.use_recovery_code(alice.id, "h1").unwrap());
        assert!(matches!(
            store.use_recovery_code(alice.id, "h3"),
            Err(StoreError::NotFound(_))
        ));
        let codes = store.recovery_codes(alice.id).unwrap();
        assert_eq!(codes.iter().filter(|c| c.used).count(), 1);
        store.set_recovery_codes(alice.id, &["h9".into()]).unwrap();
        assert_eq!(store.recovery_codes(alice.id).unwrap().len(), 1);
    }

    #[test]
    fn enrollment_tokens_work_once_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), keyring(1, 1)).unwrap();
        let (alice, bob) = (user(&store, "alice"), user(&store, "bob"));
        store
            .create_enrollment_token(alice.id, b"token-1", 1_000)
            .unwrap();
        store
            .create_enrollment_token(bob.id, b"token-2", 1_000)
            .unwrap();
        assert_eq!(
            store.consume_enrollment_token(b"token-1", 999).unwrap(),
            Some(alice.id)
        );
        assert_eq!(
            store.consume_enrollment_token(b"token-1", 999).unwrap(),
            None
        );
        assert_eq!(
            store.consume_enrollment_token(b"token-2", 1_000).unwrap(),
            None
        );
        assert_eq!(store.consume_enrollment_token(b"unknown", 0).unwrap(), None);
    }

    #[test]
    fn a_new_enrollment_token_revokes_the_users_older_ones_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), keyring(1, 1)).unwrap();
        let (alice, bob) = (user(&store, "alice"), user(&store, "bob"));
        store
            .create_enrollment_token(alice.id, b"old", 1_000)
            .unwrap();
        store
            .create_enrollment_token(bob.id, b"bobs", 1_000)
            .unwrap();
        store
            .create_enrollment_token(alice.id, b"new", 1_000)
            .unwrap();
        assert_eq!(store.enrollment_token_user(b"old", 1).unwrap(), None);
        assert_eq!(store.consume_enrollment_token(b"old", 1).unwrap(), None);
        assert_eq!(
            store.consume_enrollment_token(b"new", 1).unwrap(),
            Some(alice.id)
        );
        assert_eq!(
            store.consume_enrollment_token(b"bobs", 1).unwrap(),
            Some(bob.id)
        );
    }

    #[test]
    fn looking_a_token_up_leaves_it_usable() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), keyring(1, 1)).unwrap();
        let alice = user(&store, "alice");
        store
            .create_enrollment_token(alice.id, b"token-1", 1_000)
            .unwrap();
        for _ in 0..2 {
            assert_eq!(
                store.enrollment_token_user(b"token-1", 999).unwrap(),
                Some(alice.id)
            );
        }
        assert_eq!(
            store.enrollment_token_user(b"token-1", 1_000).unwrap(),
            None
        );
        assert_eq!(store.enrollment_token_user(b"unknown", 0).unwrap(), None);
        assert_eq!(
            store.consume_enrollment_token(b"token-1", 999).unwrap(),
            Some(alice.id)
        );
        assert_eq!(store.enrollment_token_user(b"token-1", 999).unwrap(), None);
    }

    #[test]
    fn a_second_open_of_the_same_store_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _store = EmbeddedStore::open(dir.path(), keyring(1, 1)).unwrap();
        let error = EmbeddedStore::open(dir.path(), keyring(1, 1)).unwrap_err();
        assert!(matches!(error, StoreError::Locked(_)), "{error}");
        assert!(error.to_string().contains("admin listener"), "{error}");
    }

    #[test]
    fn the_store_file_and_directory_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = EmbeddedStore::open(&data, keyring(1, 1)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(store.path()), 0o600);
    }

    fn session(user: UserId) -> SessionRecord {
        SessionRecord {
            user,
            created: 100,
            last_seen: 100,
            auth_time: 100,
            client: "192.0.2.7".into(),
            user_agent: "test".into(),
        }
    }

    #[test]
    fn sessions_are_found_by_token_touched_listed_and_ended() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), keyring(1, 1)).unwrap();
        let (alice, bob) = (user(&store, "alice"), user(&store, "bob"));
        let a1 = store.create_session(b"a1", &session(alice.id)).unwrap();
        let a2 = store.create_session(b"a2", &session(alice.id)).unwrap();
        let b1 = store.create_session(b"b1", &session(bob.id)).unwrap();
        assert!(matches!(
            store.create_session(b"a1", &session(alice.id)),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.create_session(b"x", &session(UserId::from_bytes([9; 16]))),
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(store.session(b"a1").unwrap().unwrap().0, a1);
        assert!(store.session(b"a3").unwrap().is_none());

        assert!(store.touch_session(a1, 160).unwrap());
        assert!(store.touch_session(a1, 120).unwrap(), "never moved back");
        assert_eq!(store.session(b"a1").unwrap().unwrap().1.last_seen, 160);

        assert_eq!(store.sessions().unwrap().len(), 3);
        let mut ended = store.delete_user_sessions(alice.id).unwrap();
        ended.sort_by_key(|k| k.0);
        let mut expected = vec![a1, a2];
        expected.sort_by_key(|k| k.0);
        assert_eq!(ended, expected);
        assert!(store.session(b"a2").unwrap().is_none());
        assert!(!store.touch_session(a1, 200).unwrap());
        assert!(store.delete_session(b1).unwrap());
        assert!(!store.delete_session(b1).unwrap());
        assert!(store.sessions().unwrap().is_empty());
    }

    #[test]
    fn sessions_survive_a_key_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let alice = {
            let store = EmbeddedStore::open(dir.path(), keyring(1, 1)).unwrap();
            let alice = user(&store, "alice");
            store.create_session(b"tok", &session(alice.id)).unwrap();
            alice
        };
        let ring =
            Keyring::new(MasterKey::new(2, [2; 32]), vec![MasterKey::new(1, [1; 32])]).unwrap();
        let store = EmbeddedStore::open(dir.path(), Arc::new(ring)).unwrap();
        assert_eq!(store.reseal_all().unwrap(), 1);
        let (_, record) = store.session(b"tok").unwrap().unwrap();
        assert_eq!(record.user, alice.id);
    }

    #[test]
    fn the_raw_store_file_holds_no_plaintext_secret() {
        let dir = tempfile::tempdir().unwrap();
        let seed = b"SEED-SEED-SEED-SEED-1234".to_vec();
        let blob = b"WEBAUTHN-CREDENTIAL-BLOB-5678".to_vec();
        let token = b"ENROLLMENT-TOKEN-9012".to_vec();
        let session_token = b"SESSION-TOKEN-3456".to_vec();
        let user_agent = b"Mozilla/5.0 UNIQUE-AGENT".to_vec();
        {
            let store = EmbeddedStore::open(dir.path(), keyring(1, 1)).unwrap();
            let alice = user(&store, "alice");
            store.set_totp(alice.id, &seed, eight_digits(), 0).unwrap();
            store
                .add_webauthn(alice.id, &credential(b"cred", &blob))
                .unwrap();
            store.create_enrollment_token(alice.id, &token, 10).unwrap();
            let mut record = session(alice.id);
            record.user_agent = String::from_utf8(user_agent.clone()).unwrap();
            store.create_session(&session_token, &record).unwrap();
        }
        let raw = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        let contains = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
        assert!(contains(b"alice"), "the test reads the right file");
        for secret in [&seed, &blob, &token, &session_token, &user_agent] {
            let mut hex = String::new();
            hex_encode_into(secret, &mut hex);
            let base32 = totp_rs::Secret::from(secret.clone()).to_base32();
            for form in [
                secret.as_slice(),
                hex.as_bytes(),
                hex.to_uppercase().as_bytes(),
                base32.as_bytes(),
            ] {
                assert!(!contains(form), "{}", String::from_utf8_lossy(form));
            }
        }
    }
}
