//! Account management on the admin listener, for operators and `wardgate user …`.
//!
//! Threat: account changes made behind the running gateway's back (file-lock fights, stale
//! caches), operators choosing users' passwords, and an admin API open to anyone who reaches
//! the loopback address. Rules: the running gateway is the only writer of its identity store,
//! so every change goes through it; every call carries the admin token (`<store.path>/admin.token`,
//! mode 0600, compared in constant time); a new account gets no password, only a one-time
//! enrollment token with a short expiry (`auth.enrollment_ttl`), from which the user sets their
//! own password and second factor; answers never carry password hashes or secrets.
//! Standard: OWASP ASVS 5 V6.4 (credential lifecycle) and V8.2 (administrative functions).
//!
//! ```text
//!  GET    /admin/users                      list
//!  POST   /admin/users                      {"name","email"?,"roles"[]} -> user + enrollment
//!  GET    /admin/users/{name}               show
//!  POST   /admin/users/{name}/disable       refuse the account (and, with sessions, at once)
//!  POST   /admin/users/{name}/enable
//!  PUT    /admin/users/{name}/roles         {"roles"[]}
//!  POST   /admin/users/{name}/reset-mfa     remove every second factor; enrollment required,
//!                                            a new enrollment token (the link sets a password
//!                                            and a second factor again)
//!  POST   /admin/users/{name}/reset-password remove the password; a new enrollment token
//!  POST   /admin/users/{name}/logout        end every session of the user
//!  GET    /admin/sessions[?user={name}]     live sessions (never a token)
//!  DELETE /admin/sessions/{id}              end one session
//! ```
//!
//! Disabling an account, resetting its password or its second factors end its sessions at once;
//! a change of roles reaches its live sessions at their next request.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use rand::CryptoRng;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::events::SecurityEvent;
use crate::identity::seal::hex_encode_into;
use crate::identity::{StoreError, User, UserId};
use crate::store::Stores;

pub use crate::refusal::AdminError;

impl From<StoreError> for AdminError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(_) => AdminError::NoSuchUser,
            StoreError::Conflict(_) => AdminError::NameTaken,
            other => {
                tracing::error!(error = %other, "identity store");
                AdminError::Store
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Roles {
    roles: Vec<String>,
}

/// User names: letters, digits and `._-@`, 1 to 64 characters (they appear in logs and URLs).
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

fn valid_roles(roles: &[String]) -> bool {
    roles.iter().all(|r| {
        (1..=64).contains(&r.len())
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Everything an operator may see of an account: never a hash or a secret.
async fn describe(stores: &Stores, user: &User) -> Result<Value, AdminError> {
    let credentials = &stores.credentials;
    let totp = credentials.totp(user.id).await?.is_some();
    let webauthn = credentials.webauthn_credentials(user.id).await?.len();
    let recovery_left = credentials
        .recovery_codes(user.id)
        .await?
        .iter()
        .filter(|c| !c.used)
        .count();
    Ok(json!({
        "id": user.id.to_string(),
        "name": user.name,
        "email": user.email,
        "roles": user.roles,
        "disabled": user.disabled,
        "password_set": user.password_hash.is_some(),
        "mfa": {
            "enrollment_required": user.mfa_required_enrollment,
            "totp": totp,
            "webauthn_credentials": webauthn,
            "recovery_codes_left": recovery_left,
        },
        "created": user.created,
    }))
}

/// A one-time enrollment token: 256 random bits, hex; the store keeps only its keyed hash.
async fn enrollment(
    stores: &Stores,
    id: UserId,
    now: u64,
    ttl: Duration,
    rng: &mut (dyn CryptoRng + Send),
) -> Result<Value, AdminError> {
    let mut bits = [0u8; 32];
    rng.fill_bytes(&mut bits);
    let mut token = String::with_capacity(64);
    hex_encode_into(&bits, &mut token);
    let expires = now + ttl.as_secs();
    let accounts = &stores.accounts;
    accounts
        .create_enrollment_token(id, token.as_bytes(), expires)
        .await?;
    Ok(json!({ "token": token, "expires": expires }))
}

/// What an account change means for the user's live sessions; applied by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEffect {
    None,
    /// End them all (the user's id and name); the reason goes to the security events.
    End(UserId, String, &'static str),
    /// Keep them, but read the account again.
    Refresh(UserId),
}

/// One call on the user API; `path` is below `/admin/users`.
pub struct Call<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub body: &'a Bytes,
}

/// What an admin call did: the answer, what it means for the user's sessions, and the account
/// change to report as a security event (the caller emits it, back on the runtime).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub effect: SessionEffect,
    pub changed: Option<SecurityEvent>,
}

/// Answers one admin call; `now` is unix seconds, `rng` makes user ids and enrollment tokens.
pub async fn handle(
    stores: &Stores,
    call: Call<'_>,
    now: u64,
    rng: &mut (dyn CryptoRng + Send),
    enrollment_ttl: Duration,
) -> Result<Answer, AdminError> {
    let Call { method, path, body } = call;
    let (accounts, credentials) = (&stores.accounts, &stores.credentials);
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match (method, segments.as_slice()) {
        (&Method::GET, []) => {
            let mut users = Vec::new();
            for user in accounts.users().await? {
                users.push(describe(stores, &user).await?);
            }
            Ok(Answer {
                status: StatusCode::OK,
                body: json!({ "users": users }),
                effect: SessionEffect::None,
                changed: None,
            })
        }
        (&Method::POST, []) => {
            let new: NewUser = serde_json::from_slice(body).map_err(|_| AdminError::BadRequest)?;
            if !valid_name(&new.name) || !valid_roles(&new.roles) {
                return Err(AdminError::BadRequest);
            }
            let mut user = User::new(UserId::random(rng), new.name, now);
            user.email = new.email;
            user.roles = new.roles;
            user.mfa_required_enrollment = true;
            accounts.create(user.clone()).await?;
            let enrollment = enrollment(stores, user.id, now, enrollment_ttl, rng).await?;
            let changed = Some(SecurityEvent::AccountChanged {
                user: user.name.clone(),
                action: "created",
            });
            Ok(Answer {
                status: StatusCode::CREATED,
                body: json!({ "user": describe(stores, &user).await?, "enrollment": enrollment }),
                effect: SessionEffect::None,
                changed,
            })
        }
        (&Method::GET, [name]) => {
            let user = accounts.user_by_name(name).await?;
            Ok(Answer {
                status: StatusCode::OK,
                body: json!({ "user": describe(stores, &user).await? }),
                effect: SessionEffect::None,
                changed: None,
            })
        }
        (
            &Method::POST,
            [
                name,
                action @ ("disable" | "enable" | "reset-mfa" | "reset-password" | "logout"),
            ],
        ) => {
            let user = accounts.user_by_name(name).await?;
            let mut answer = json!({});
            let change = match *action {
                "enable" => "account_enabled",
                "disable" => "account_disabled",
                "reset-mfa" => "mfa_reset",
                "reset-password" => "password_reset",
                _ => "operator_logout",
            };
            let effect = match *action {
                "enable" => SessionEffect::None,
                _ => SessionEffect::End(user.id, user.name.clone(), change),
            };
            match *action {
                "logout" => {}
                "disable" => accounts.set_disabled(user.id, true).await?,
                "enable" => accounts.set_disabled(user.id, false).await?,
                "reset-mfa" => {
                    if credentials.totp(user.id).await?.is_some() {
                        credentials.delete_totp(user.id).await?;
                    }
                    for credential in credentials.webauthn_credentials(user.id).await? {
                        credentials
                            .delete_webauthn(user.id, credential.credential_id.clone())
                            .await?;
                    }
                    credentials.set_recovery_codes(user.id, Vec::new()).await?;
                    accounts.set_mfa_required_enrollment(user.id, true).await?;
                    let link = enrollment(stores, user.id, now, enrollment_ttl, rng).await?;
                    answer = json!({ "enrollment": link });
                }
                _ => {
                    accounts.set_password_hash(user.id, None).await?;
                    let link = enrollment(stores, user.id, now, enrollment_ttl, rng).await?;
                    answer = json!({ "enrollment": link });
                }
            }
            let changed = Some(SecurityEvent::AccountChanged {
                user: user.name.clone(),
                action: change,
            });
            let user = accounts.user(user.id).await?;
            answer["user"] = describe(stores, &user).await?;
            Ok(Answer {
                status: StatusCode::OK,
                body: answer,
                effect,
                changed,
            })
        }
        (&Method::PUT, [name, "roles"]) => {
            let roles: Roles = serde_json::from_slice(body).map_err(|_| AdminError::BadRequest)?;
            if !valid_roles(&roles.roles) {
                return Err(AdminError::BadRequest);
            }
            let user = accounts.user_by_name(name).await?;
            accounts.set_roles(user.id, roles.roles).await?;
            let changed = Some(SecurityEvent::AccountChanged {
                user: user.name.clone(),
                action: "roles_set",
            });
            Ok(Answer {
                status: StatusCode::OK,
                body: json!({ "user": describe(stores, &accounts.user(user.id).await?).await? }),
                effect: SessionEffect::Refresh(user.id),
                changed,
            })
        }
        _ => Err(AdminError::BadRequest),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::identity::{EmbeddedStore, Keyring, MasterKey};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const NOW: u64 = 1_800_000_000;

    #[tokio::test]
    async fn account_changes_are_security_events_and_end_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path(), Arc::new(keyring)).unwrap());
        let stores = Stores::embedded(store.clone());
        let mut changes = Vec::new();
        let mut rng = StdRng::seed_from_u64(7);
        let mut call = async |method: Method, path: &str, body: &str| {
            let body = Bytes::from(body.to_owned());
            let call = Call {
                method: &method,
                path,
                body: &body,
            };
            let ttl = Duration::from_secs(60);
            let answer = handle(&stores, call, NOW, &mut rng, ttl).await.unwrap();
            changes.extend(answer.changed);
            (answer.status, answer.body, answer.effect)
        };
        let (status, _, effect) =
            call(Method::POST, "", r#"{"name":"ana","roles":["nurse"]}"#).await;
        assert_eq!((status, effect), (StatusCode::CREATED, SessionEffect::None));
        let (_, _, effect) = call(Method::POST, "/ana/disable", "").await;
        let id = store.user_by_name("ana").unwrap().id;
        assert_eq!(
            effect,
            SessionEffect::End(id, "ana".into(), "account_disabled")
        );
        let (_, _, effect) = call(Method::PUT, "/ana/roles", r#"{"roles":["physician"]}"#).await;
        assert_eq!(effect, SessionEffect::Refresh(id));
        let actions: Vec<&str> = changes
            .iter()
            .map(|event| match *event {
                SecurityEvent::AccountChanged { ref user, action } => {
                    assert_eq!(user, "ana");
                    action
                }
                ref other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(actions, ["created", "account_disabled", "roles_set"]);
    }
}
