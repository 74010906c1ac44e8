//! The enrollment API (`/.wardgate/api/enroll/…`): JSON in and out over the enrollment state
//! machine of `auth/enrollment.rs`, which knows nothing of HTTP.

use bytes::Bytes;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::json::{self, parse};
use super::paths;
use crate::auth::enrollment::{Enrollment, PasswordError};
use crate::auth::events::Factor;
use crate::auth::password::Reason;
use crate::auth::shared::unavailable;
use crate::body::ResponseBody;
use crate::refusal::Refusal;
use crate::refused::Refused;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordStep {
    token: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TotpStep {
    enrollment: String,
    code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebAuthnStart {
    enrollment: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebAuthnFinish {
    enrollment: String,
    ceremony: String,
    /// What the browser's `navigator.credentials.create()` returned, as JSON.
    credential: serde_json::Value,
}

/// Serves one request of the JSON API (`/.wardgate/api/enroll/…`); `now` is unix seconds.
pub async fn handle(
    enrollment: &Enrollment,
    request: Request<Incoming>,
    path: &str,
    idle: std::time::Duration,
    now: u64,
) -> Result<Response<ResponseBody>, Refused> {
    if ![
        paths::ENROLL_PASSWORD_API,
        paths::ENROLL_TOTP_API,
        paths::ENROLL_WEBAUTHN_START_API,
        paths::ENROLL_WEBAUTHN_FINISH_API,
    ]
    .contains(&path)
    {
        return Err(Refusal::GatewayPathNotFound.into());
    }
    if request.method() != Method::POST {
        return Err(Refused::method_not_allowed("POST"));
    }
    let bytes = json::body(request, idle).await?;
    if path == paths::ENROLL_WEBAUTHN_START_API {
        let step: WebAuthnStart = parse(&bytes)?;
        let (ceremony, options) = enrollment.webauthn_options(&step.enrollment, now).await?;
        Ok(json::ok(
            &json!({ "ceremony": ceremony, "options": options }),
        ))
    } else if path == paths::ENROLL_WEBAUTHN_FINISH_API {
        let step: WebAuthnFinish = parse(&bytes)?;
        let credential = step.credential.to_string();
        let codes = enrollment
            .confirm_webauthn(&step.enrollment, &step.ceremony, credential.as_bytes(), now)
            .await?;
        Ok(json::ok(&json!({ "recovery_codes": codes })))
    } else if path == paths::ENROLL_PASSWORD_API {
        let step: PasswordStep = parse(&bytes)?;
        let started = enrollment
            .set_password(&step.token, step.password, now)
            .await
            .map_err(|error| match error {
                PasswordError::Policy { reasons, .. } => policy_refusal(&reasons),
                PasswordError::Refused(refused) => refused,
            })?;
        let methods: Vec<&str> = started.methods.iter().map(|f| f.name()).collect();
        let mut answer = json!({ "enrollment": started.enrollment, "methods": methods });
        if started.methods.contains(&Factor::Totp) {
            answer["totp"] = json!({
                "otpauth": started.totp.otpauth_uri().map_err(|e| unavailable(&e))?,
                "secret": started.totp.secret_base32(),
            });
        }
        Ok(json::ok(&answer))
    } else {
        let step: TotpStep = parse(&bytes)?;
        let codes = enrollment
            .confirm_totp(&step.enrollment, &step.code, now)
            .await?;
        Ok(json::ok(&json!({ "recovery_codes": codes })))
    }
}

/// `WG-AUTH-002` with every failed rule, in words for the user.
fn policy_refusal(reasons: &[Reason]) -> Refused {
    let refusal = Refusal::PasswordRefused;
    let messages: Vec<String> = reasons.iter().map(Reason::message).collect();
    let body = json!({
        "error": refusal.code(),
        "message": refusal.reason(),
        "reasons": messages,
    });
    Refused::with_body(refusal, Bytes::from(body.to_string()))
}
