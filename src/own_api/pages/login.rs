//! Login in the browser: the same steps as the JSON API ([`Login`]), as pages, ending in the
//! session cookie instead of a bearer token.
//!
//! ```text
//!  GET  /.wardgate/login?return_to=…&reason=…
//!         reason=step-up and a live session: the second-factor page for a step-up
//!         else: the password form (a notice says why: idle, absolute, step-up, logout)
//!  POST /.wardgate/login            wrong: the form again, 401 WG-AUTH-009 (one answer for all)
//!                                   else: the second-factor page (the challenge's factors)
//!  POST /.wardgate/login/totp       a code from the app
//!  POST /.wardgate/login/recovery   a recovery code
//!  POST /.wardgate/login/webauthn   the passkey's answer (webauthn.js fills the form)
//!         wrong: the second-factor page again, 401 WG-AUTH-011, while the challenge lasts
//!         right: Set-Cookie (a NEW token) and 303 to return_to when it is a safe same-origin
//!                path (auth::return_to), else to /.wardgate/; after a recovery code a page
//!                that says how many are left and to ask for a new enrollment
//!  GET  /.wardgate/                 who is logged in, until when; logout buttons; with a second
//!                                   factor younger than 10 minutes, "add a passkey" (else a
//!                                   step-up link first); links to the access pages the
//!                                   person's roles may use (`access.rs`)
//!  POST /.wardgate/passkeys         the new passkey (webauthn.js fills the form): the home page
//!                                   again with how many the user has, or 400 WG-AUTH-013
//!  POST /.wardgate/logout           scope=this|everywhere: sessions ended, cookie cleared
//! ```
//!
//! `return_to` travels as a hidden field and is validated where it is used, so a forged value
//! can only ever lead to the gateway's own home page.

use std::sync::Arc;

use askama::Template;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use super::access::{Links, links};
use super::{Form, PageRequest, html, page, render};
use crate::access::Access;
use crate::auth::csrf::FormToken;
use crate::auth::events::Factor;
use crate::auth::login::{Completed, Login, Proof, Started};
use crate::auth::return_to::safe_return_target;
use crate::body::ResponseBody;
use crate::own_api::paths;
use crate::refusal::Refusal;
use crate::refused::Refused;
use crate::session::{self, Live};

#[derive(Template)]
#[template(path = "login_password.html")]
struct PasswordPage<'a> {
    csrf: &'a str,
    return_to: &'a str,
    user: &'a str,
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "login_factor.html")]
struct FactorPage<'a> {
    csrf: &'a str,
    challenge: &'a str,
    return_to: &'a str,
    totp: bool,
    webauthn: bool,
    recovery: bool,
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "login_recovery_used.html")]
struct RecoveryUsedPage<'a> {
    left: usize,
    next: &'a str,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage<'a> {
    csrf: &'a str,
    user: &'a str,
    ends_in_minutes: u64,
    notice: Option<&'a str>,
    add_passkey: bool,
    add_after_step_up: bool,
    access: Links,
}

/// `/.wardgate/login`: the form (GET) and the password step (POST).
pub async fn password(
    login: &Login,
    request: PageRequest<'_>,
) -> Result<Response<ResponseBody>, Refused> {
    match *request.method() {
        Method::GET => form(login, request).await,
        Method::POST => check_password(login, request).await,
        _ => Err(Refused::method_not_allowed("GET, POST")),
    }
}

async fn form(login: &Login, request: PageRequest<'_>) -> Result<Response<ResponseBody>, Refused> {
    let csrf = request.form_token();
    let return_to = request
        .query("return_to")
        .and_then(|raw| safe_return_target(&raw))
        .unwrap_or_default();
    let reason = request.query("reason");
    if reason.as_deref() == Some(session::Ended::StepUp.reason())
        && let Ok(live) = login.current(&request.parts.headers, request.now).await
    {
        let started = login.step_up(live, request.now).await?;
        let body = render(&FactorPage {
            notice: Some(Refusal::StepUpRequired.reason()),
            ..factor_page(
                &csrf,
                &started.challenge,
                &started.factors,
                &return_to,
                None,
            )
        })?;
        return Ok(html(StatusCode::OK, body, Some(&csrf)));
    }
    let notice = match reason.as_deref() {
        Some("idle") => Some(Refusal::SessionIdle.reason()),
        Some("absolute") => Some(Refusal::SessionAbsolute.reason()),
        Some("step-up") => Some(Refusal::StepUpRequired.reason()),
        Some("logout") => Some("you have logged out"),
        _ => None,
    };
    let form = PasswordPage {
        csrf: csrf.token.as_str(),
        return_to: &return_to,
        user: "",
        notice,
        error: None,
    };
    page(StatusCode::OK, &form, Some(&csrf))
}

async fn check_password(
    login: &Login,
    request: PageRequest<'_>,
) -> Result<Response<ResponseBody>, Refused> {
    let (now, client) = (request.now, request.client());
    let form = request.form().await?;
    let csrf = form.csrf.clone();
    let [user, password, return_to] = form.take(["user", "password", "return_to"])?;
    match login.password(&user, password, &client, now).await {
        Ok(Started {
            challenge, factors, ..
        }) => Ok(html(
            StatusCode::OK,
            render(&factor_page(&csrf, &challenge, &factors, &return_to, None))?,
            None,
        )),
        Err(refused) if refused.refusal() == Refusal::LoginFailed => {
            let form = PasswordPage {
                csrf: csrf.token.as_str(),
                return_to: &return_to,
                user: &user,
                notice: None,
                error: Some(Refusal::LoginFailed.reason()),
            };
            Err(Refused::page(Refusal::LoginFailed, render(&form)?))
        }
        Err(refused) => Err(refused),
    }
}

/// `/.wardgate/login/{totp,recovery,webauthn}`: the second factor (POST).
pub async fn second_factor(
    login: &Login,
    request: PageRequest<'_>,
    path: &str,
) -> Result<Response<ResponseBody>, Refused> {
    if request.method() != Method::POST {
        return Err(Refused::method_not_allowed("POST"));
    }
    let (now, client) = (request.now, request.client());
    let form = request.form().await?;
    let csrf = form.csrf.clone();
    let (challenge, return_to, answer) = if path == paths::LOGIN_WEBAUTHN_PAGE {
        let [challenge, return_to, ceremony, credential] =
            form.take(["challenge", "return_to", "ceremony", "credential"])?;
        (challenge, return_to, (Some(ceremony), credential))
    } else {
        let [challenge, return_to, code] = form.take(["challenge", "return_to", "code"])?;
        (challenge, return_to, (None, code))
    };
    let proof = match (&answer, path) {
        ((Some(ceremony), credential), _) => Proof::WebAuthn {
            ceremony,
            credential: credential.as_bytes(),
        },
        ((None, code), paths::LOGIN_TOTP_PAGE) => Proof::Totp(code),
        ((None, code), _) => Proof::RecoveryCode(code),
    };
    match login.second_factor(&challenge, proof, &client, now).await {
        Ok(completed) => signed_in(login, &completed, &return_to, now),
        Err(refused) if refused.refusal() == Refusal::SecondFactorWrong => {
            // Shown again while the challenge lasts; after the last wrong answer it is gone.
            let Some(factors) = login.open_factors(&challenge, now).await? else {
                return Err(refused);
            };
            let error = Some(Refusal::SecondFactorWrong.reason());
            let body = render(&factor_page(&csrf, &challenge, &factors, &return_to, error))?;
            Err(Refused::page(Refusal::SecondFactorWrong, body))
        }
        Err(refused) => Err(refused),
    }
}

/// The answer to a finished login: the session cookie, then the page first asked for.
fn signed_in(
    login: &Login,
    completed: &Completed,
    return_to: &str,
    now: u64,
) -> Result<Response<ResponseBody>, Refused> {
    let next = safe_return_target(return_to).unwrap_or_else(|| paths::HOME_PAGE.to_owned());
    let mut response = match completed.recovery_codes_left {
        Some(left) => page(
            StatusCode::OK,
            &RecoveryUsedPage { left, next: &next },
            None,
        )?,
        None => see_other(&next),
    };
    response
        .headers_mut()
        .insert(header::SET_COOKIE, completed.token.cookie());
    let lifetimes = login.sessions().lifetimes();
    response.headers_mut().insert(
        crate::session::EXPIRES_IN,
        HeaderValue::from(completed.live.remaining(&lifetimes, now)),
    );
    Ok(response)
}

/// A `303 See Other` to `location`, a path the gateway chose or validated.
pub(super) fn see_other(location: &str) -> Response<ResponseBody> {
    let mut response = html(StatusCode::SEE_OTHER, Bytes::new(), None);
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The second-factor page for a challenge: a section for each factor it offers.
fn factor_page<'a>(
    csrf: &'a FormToken,
    challenge: &'a str,
    factors: &[Factor],
    return_to: &'a str,
    error: Option<&'a str>,
) -> FactorPage<'a> {
    FactorPage {
        csrf: csrf.token.as_str(),
        challenge,
        return_to,
        totp: factors.contains(&Factor::Totp),
        webauthn: factors.contains(&Factor::WebAuthn),
        recovery: factors.contains(&Factor::RecoveryCode),
        notice: None,
        error,
    }
}

/// `/.wardgate/`: who is logged in and until when (GET); without a session, the login page.
pub async fn home(
    login: &Login,
    access: Option<&Access>,
    request: PageRequest<'_>,
) -> Result<Response<ResponseBody>, Refused> {
    if request.method() != Method::GET {
        return Err(Refused::method_not_allowed("GET"));
    }
    let Ok(live) = login.current(&request.parts.headers, request.now).await else {
        return Ok(see_other(paths::LOGIN_PAGE));
    };
    let csrf = request.form_token();
    home_page(login, access, &live, &csrf, None, request.now)
}

/// `/.wardgate/passkeys` (POST): one more passkey for the logged-in user.
pub async fn add_passkey(
    login: &Login,
    access: Option<&Access>,
    request: PageRequest<'_>,
) -> Result<Response<ResponseBody>, Refused> {
    let now = request.now;
    let (live, form) = session_post(login, request).await?;
    let csrf = form.csrf.clone();
    let [ceremony, credential] = form.take(["ceremony", "credential"])?;
    let count = login
        .add_passkey(&live, &ceremony, credential.as_bytes(), now)
        .await?;
    let notice = format!("passkey added: you now have {count} passkeys or security keys");
    home_page(login, access, &live, &csrf, Some(&notice), now)
}

fn home_page(
    login: &Login,
    access: Option<&Access>,
    live: &Live,
    csrf: &FormToken,
    notice: Option<&str>,
    now: u64,
) -> Result<Response<ResponseBody>, Refused> {
    let lifetimes = login.sessions().lifetimes();
    let may_add = login.may_add_passkey(live, now);
    let home = HomePage {
        csrf: csrf.token.as_str(),
        user: &live.name,
        ends_in_minutes: live.remaining(&lifetimes, now).div_ceil(60),
        notice,
        add_passkey: may_add.is_ok(),
        add_after_step_up: may_add.err() == Some(Refusal::StepUpRequired),
        access: links(access, &live.roles),
    };
    page(StatusCode::OK, &home, Some(csrf))
}

/// A form posted by a logged-in browser: POST only, the live session (else its refusal), and
/// the form once its CSRF checks pass.
pub(super) async fn session_post(
    login: &Login,
    request: PageRequest<'_>,
) -> Result<(Arc<Live>, Form), Refused> {
    if request.method() != Method::POST {
        return Err(Refused::method_not_allowed("POST"));
    }
    let live = login.current(&request.parts.headers, request.now).await?;
    Ok((live, request.form().await?))
}

/// `/.wardgate/logout` (POST, `scope=this|everywhere`): ends the session(s), clears the cookie
/// and shows the login page.
pub async fn logout(
    login: &Login,
    request: PageRequest<'_>,
) -> Result<Response<ResponseBody>, Refused> {
    let (live, form) = session_post(login, request).await?;
    let [scope] = form.take(["scope"])?;
    let everywhere = match scope.as_str() {
        "this" => false,
        "everywhere" => true,
        _ => return Err(Refusal::MalformedForm.into()),
    };
    login.logout(&live, everywhere).await?;
    let mut response = see_other(&format!("{}?reason=logout", paths::LOGIN_PAGE));
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session::clear_cookie());
    Ok(response)
}
