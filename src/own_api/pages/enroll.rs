//! Enrollment in the browser: the same steps as the JSON API ([`Enrollment`]), as pages.
//!
//! ```text
//!  GET  /.wardgate/enroll?token=…  password form (the policy's rules; hidden token and csrf)
//!                                  unknown / used / expired link: WG-AUTH-001 page
//!  POST /.wardgate/enroll          refused password: the form again with every reason (400
//!                                  WG-AUTH-002), the link still good; else the second-factor
//!                                  page: a passkey button (when WebAuthn is configured) and the
//!                                  app: QR code, secret as text, otpauth:// link, code form
//!  POST /.wardgate/enroll/totp     wrong code: the second-factor page again (400 WG-AUTH-005);
//!                                  else the recovery codes, shown once
//!  POST /.wardgate/enroll/webauthn the new passkey (webauthn.js fills the form): refused, the
//!                                  second-factor page again (400 WG-AUTH-013); else the codes
//! ```

use askama::Template;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Method, Response, StatusCode};

use super::{PageRequest, html, page, render};
use crate::auth::csrf::FormToken;
use crate::auth::enrollment::{Enrollment, PasswordError};
use crate::auth::events::Factor;
use crate::auth::shared::unavailable;
use crate::auth::totp::PendingTotp;
use crate::body::ResponseBody;
use crate::own_api::paths;
use crate::refusal::Refusal;
use crate::refused::Refused;

#[derive(Template)]
#[template(path = "enroll_password.html")]
struct PasswordPage<'a> {
    csrf: &'a str,
    token: &'a str,
    user_name: &'a str,
    rules: &'a [String],
    errors: &'a [String],
}

#[derive(Template)]
#[template(path = "enroll_totp.html")]
struct TotpPage<'a> {
    csrf: &'a str,
    enrollment: &'a str,
    secret: &'a str,
    otpauth: &'a str,
    qr_png_base64: &'a str,
    webauthn: bool,
    app: bool,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "enroll_done.html")]
struct DonePage<'a> {
    codes: &'a [String],
}

/// `/.wardgate/enroll`: the password form (GET) and the password step (POST).
pub async fn password(
    enrollment: &Enrollment,
    request: PageRequest<'_>,
) -> Result<Response<ResponseBody>, Refused> {
    match *request.method() {
        Method::GET => password_form(enrollment, request).await,
        Method::POST => set_password(enrollment, request).await,
        _ => Err(Refused::method_not_allowed("GET, POST")),
    }
}

async fn password_form(
    enrollment: &Enrollment,
    request: PageRequest<'_>,
) -> Result<Response<ResponseBody>, Refused> {
    let token = request
        .query("token")
        .ok_or(Refusal::EnrollmentLinkInvalid)?;
    let user = enrollment.link_user(&token, request.now).await?;
    let csrf = request.form_token();
    let form = PasswordPage {
        csrf: csrf.token.as_str(),
        token: &token,
        user_name: &user.name,
        rules: &enrollment.policy().rules(),
        errors: &[],
    };
    page(StatusCode::OK, &form, Some(&csrf))
}

async fn set_password(
    enrollment: &Enrollment,
    request: PageRequest<'_>,
) -> Result<Response<ResponseBody>, Refused> {
    let now = request.now;
    let form = request.form().await?;
    let csrf = form.csrf.clone();
    let [token, password] = form.take(["token", "password"])?;
    match enrollment.set_password(&token, password, now).await {
        Ok(started) => Ok(html(
            StatusCode::OK,
            factor_html(
                &csrf,
                &started.enrollment,
                &started.methods,
                &started.totp,
                None,
            )?,
            None,
        )),
        Err(PasswordError::Policy { reasons, user_name }) => {
            let errors: Vec<String> = reasons.iter().map(|r| r.message()).collect();
            let form = PasswordPage {
                csrf: csrf.token.as_str(),
                token: &token,
                user_name: &user_name,
                rules: &enrollment.policy().rules(),
                errors: &errors,
            };
            Err(Refused::page(Refusal::PasswordRefused, render(&form)?))
        }
        Err(PasswordError::Refused(refused)) => Err(refused),
    }
}

/// `/.wardgate/enroll/totp` (the first code from the app) and `/.wardgate/enroll/webauthn`
/// (the new passkey, as `webauthn.js` posts it): POST.
pub async fn second_factor(
    enrollment: &Enrollment,
    request: PageRequest<'_>,
    path: &str,
) -> Result<Response<ResponseBody>, Refused> {
    if request.method() != Method::POST {
        return Err(Refused::method_not_allowed("POST"));
    }
    let now = request.now;
    let form = request.form().await?;
    let csrf = form.csrf.clone();
    let (id, confirmed, retry) = if path == paths::ENROLL_WEBAUTHN_PAGE {
        let [id, ceremony, credential] = form.take(["enrollment", "ceremony", "credential"])?;
        let confirmed = enrollment
            .confirm_webauthn(&id, &ceremony, credential.as_bytes(), now)
            .await;
        (id, confirmed, Refusal::FactorNotRegistered)
    } else {
        let [id, code] = form.take(["enrollment", "code"])?;
        let confirmed = enrollment.confirm_totp(&id, &code, now).await;
        (id, confirmed, Refusal::TotpCodeWrong)
    };
    finished(enrollment, confirmed, &csrf, &id, retry, now).await
}

/// The recovery codes after a proven factor; after a refused one (`retry`), the second-factor
/// page again while the enrollment lasts (after the last wrong code it is gone).
async fn finished(
    enrollment: &Enrollment,
    confirmed: Result<Vec<String>, Refused>,
    csrf: &FormToken,
    id: &str,
    retry: Refusal,
    now: u64,
) -> Result<Response<ResponseBody>, Refused> {
    match confirmed {
        Ok(codes) => page(StatusCode::OK, &DonePage { codes: &codes }, None),
        Err(refused) if refused.refusal() == retry => match enrollment.pending(id, now).await? {
            Some((methods, totp)) => {
                let html = factor_html(csrf, id, &methods, &totp, Some(retry.reason()))?;
                Err(Refused::page(retry, html))
            }
            None => Err(refused),
        },
        Err(refused) => Err(refused),
    }
}

/// The second-factor page, with what `methods` allow: the passkey button, and the app's QR
/// code, secret, `otpauth://` link and code form.
fn factor_html(
    csrf: &FormToken,
    id: &str,
    methods: &[Factor],
    totp: &PendingTotp,
    error: Option<&str>,
) -> Result<Bytes, Refused> {
    let otpauth = totp.otpauth_uri().map_err(|e| unavailable(&e))?;
    let qr = STANDARD.encode(totp.qr_png().map_err(|e| unavailable(&e))?);
    render(&TotpPage {
        csrf: csrf.token.as_str(),
        enrollment: id,
        secret: &totp.secret_base32(),
        otpauth: &otpauth,
        qr_png_base64: &qr,
        webauthn: methods.contains(&Factor::WebAuthn),
        app: methods.contains(&Factor::Totp),
        error,
    })
}
