//! The login API (`/.wardgate/api/login…`, step-up, logout, session, passkeys): JSON in and out
//! over the login state machine of `auth/login.rs`, which knows nothing of HTTP.

use std::net::IpAddr;

use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::json::{self, parse};
use super::paths;
use crate::auth::login::{Client, Completed, Login, Proof, Started};
use crate::body::ResponseBody;
use crate::refusal::Refusal;
use crate::refused::Refused;
use crate::session;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordStep {
    user: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeStep {
    challenge: String,
    code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebAuthnStart {
    challenge: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasskeyFinish {
    ceremony: String,
    /// What the browser's `navigator.credentials.create()` returned, as JSON.
    credential: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebAuthnFinish {
    challenge: String,
    ceremony: String,
    /// What the browser's `navigator.credentials.get()` returned, as JSON.
    credential: serde_json::Value,
}

/// Serves the JSON API under `/.wardgate/api/`.
pub async fn handle(
    login: &Login,
    request: Request<Incoming>,
    path: &str,
    client: IpAddr,
    idle: std::time::Duration,
    now: u64,
) -> Result<Response<ResponseBody>, Refused> {
    let allowed = if path == paths::SESSION_API {
        "GET"
    } else {
        "POST"
    };
    if request.method().as_str() != allowed {
        return Err(Refused::with_header(
            Refusal::MethodNotAllowed,
            header::ALLOW,
            HeaderValue::from_static(allowed),
        ));
    }
    let client = &Client::new(client, request.headers());
    match path {
        paths::SESSION_API => {
            let live = login.current(request.headers(), now).await?;
            let lifetimes = login.sessions().lifetimes();
            Ok(json::ok(&json!({
                "user": live.name,
                "roles": live.roles,
                "created": live.created,
                "auth_time": live.auth_time,
                "expires_in": live.remaining(&lifetimes, now),
            })))
        }
        paths::LOGOUT_API | paths::LOGOUT_ALL_API => {
            let live = login.current(request.headers(), now).await?;
            let ended = login.logout(&live, path == paths::LOGOUT_ALL_API).await?;
            let mut response = json::ok(&json!({ "ended": ended }));
            response
                .headers_mut()
                .insert(header::SET_COOKIE, session::clear_cookie());
            Ok(response)
        }
        paths::STEP_UP_API => {
            let live = login.current(request.headers(), now).await?;
            let started = login.step_up(live, now).await?;
            Ok(json::ok(&started_json(&started)))
        }
        paths::PASSKEY_START_API => {
            let live = login.current(request.headers(), now).await?;
            let (ceremony, options) = login.passkey_options(&live, now).await?;
            Ok(json::ok(
                &json!({ "ceremony": ceremony, "options": options }),
            ))
        }
        paths::PASSKEY_FINISH_API => {
            let live = login.current(request.headers(), now).await?;
            let step: PasskeyFinish = parse(&json::body(request, idle).await?)?;
            let credential = step.credential.to_string();
            let count = login
                .add_passkey(&live, &step.ceremony, credential.as_bytes(), now)
                .await?;
            Ok(json::ok(&json!({ "webauthn_credentials": count })))
        }
        paths::LOGIN_API => {
            let step: PasswordStep = parse(&json::body(request, idle).await?)?;
            let started = login
                .password(&step.user, step.password, client, now)
                .await?;
            Ok(json::ok(&started_json(&started)))
        }
        paths::LOGIN_TOTP_API | paths::LOGIN_RECOVERY_API => {
            let step: CodeStep = parse(&json::body(request, idle).await?)?;
            let proof = if path == paths::LOGIN_TOTP_API {
                Proof::Totp(&step.code)
            } else {
                Proof::RecoveryCode(&step.code)
            };
            let completed = login
                .second_factor(&step.challenge, proof, client, now)
                .await?;
            Ok(json::ok(&completed_json(login, &completed, now)))
        }
        paths::LOGIN_WEBAUTHN_START_API => {
            let step: WebAuthnStart = parse(&json::body(request, idle).await?)?;
            let (ceremony, options) = login.webauthn_options(&step.challenge, now).await?;
            Ok(json::ok(
                &json!({ "ceremony": ceremony, "options": options }),
            ))
        }
        paths::LOGIN_WEBAUTHN_FINISH_API => {
            let step: WebAuthnFinish = parse(&json::body(request, idle).await?)?;
            let credential = step.credential.to_string();
            let proof = Proof::WebAuthn {
                ceremony: &step.ceremony,
                credential: credential.as_bytes(),
            };
            let completed = login
                .second_factor(&step.challenge, proof, client, now)
                .await?;
            Ok(json::ok(&completed_json(login, &completed, now)))
        }
        _ => Err(Refusal::GatewayPathNotFound.into()),
    }
}

fn started_json(started: &Started) -> serde_json::Value {
    let factors: Vec<&str> = started.factors.iter().map(|f| f.name()).collect();
    json!({
        "challenge": started.challenge,
        "factors": factors,
        "expires_in": started.expires_in,
    })
}

/// The answer to a finished login: the bearer token and when the session ends.
fn completed_json(login: &Login, completed: &Completed, now: u64) -> serde_json::Value {
    let lifetimes = login.sessions().lifetimes();
    let mut answer = json!({
        "token": completed.token.as_str(),
        "token_type": "Bearer",
        "expires_in": completed.live.remaining(&lifetimes, now),
        "session_expires_at": completed.live.created + lifetimes.absolute,
        "factor": completed.factor.name(),
    });
    if let Some(left) = completed.recovery_codes_left {
        answer["recovery_codes_left"] = json!(left);
        answer["reenroll"] = json!(true);
    }
    answer
}
