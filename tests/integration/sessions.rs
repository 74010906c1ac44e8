//! Login through the JSON API, then sessions on protected routes, over real TLS: bearer tokens,
//! uniform failures, the identity the upstream gets (and the one it must never get), the signed
//! assertion checked against the served JWKS, logout and revocation.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use crate::enrollment::{
    Answer, PASSWORD, STRONG, TOTP, assert_refused, oathtool, post, read_answer,
};
use crate::harness::*;
use wardgate::auth::events::{Locked, SecurityEvent};

pub(crate) const LOGIN: &str = "/.wardgate/api/login";

pub(crate) fn config(upstream: &str) -> String {
    config_with(
        &format!("  backend: {{ url: \"{upstream}\" }}"),
        "  - name: records\n    path: /api/**\n    upstream: backend\n    auth: session\n    identity: { headers: [id, name, roles], assertion: [roles] }\n  - { path: /public/**, upstream: backend, auth: none }",
        "auth:\n  webauthn: { rp_id: localhost, origin: \"https://localhost:8443\" }\n",
    )
}

/// The wall clock, as the gateway under test reads it.
#[allow(clippy::disallowed_methods)]
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The code of the authenticator's next time step: the current one was spent at enrollment.
pub(crate) fn next_code(secret: &str) -> String {
    code_at(secret, 30)
}

/// The authenticator's code `ahead` seconds from now.
pub(crate) fn code_at(secret: &str, ahead: u64) -> String {
    code_of_digits(secret, 6, ahead)
}

/// The code of an authenticator app showing `digits` digits, `ahead` seconds from now.
pub(crate) fn code_of_digits(secret: &str, digits: u8, ahead: u64) -> String {
    let later = unix_now() + ahead;
    let output = Command::new("oathtool")
        .args(["--totp", "--base32", secret, "-N", &format!("@{later}")])
        .arg(format!("--digits={digits}"))
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Enrolls `name` through the API; returns the TOTP secret and the recovery codes.
pub(crate) async fn enroll(gateway: &impl Listening, name: &str) -> (String, Vec<String>) {
    let token = add_user(gateway, name).await;
    let answer = post(
        gateway,
        PASSWORD,
        json!({ "token": token, "password": STRONG }),
    )
    .await;
    let secret = answer.body["totp"]["secret"].as_str().unwrap().to_owned();
    let enrollment = answer.body["enrollment"].clone();
    let answer = post(
        gateway,
        TOTP,
        json!({ "enrollment": enrollment, "code": oathtool(&secret) }),
    )
    .await;
    let codes = strings(&answer.body["recovery_codes"])
        .into_iter()
        .map(str::to_owned)
        .collect();
    (secret, codes)
}

/// Logs `name` in with the password and the authenticator's next code; the bearer token.
pub(crate) async fn totp_login(gateway: &impl Listening, name: &str, secret: &str) -> String {
    let started = post(gateway, LOGIN, json!({ "user": name, "password": STRONG })).await;
    let done = post(
        gateway,
        "/.wardgate/api/login/totp",
        json!({ "challenge": started.body["challenge"], "code": next_code(secret) }),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    done.body["token"].as_str().unwrap().to_owned()
}

/// A GET of `path` with the bearer `token` and the `extra` headers: status, headers, body.
pub(crate) async fn call(
    gateway: &impl Listening,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(gateway.url(path));
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = gateway
        .client(false)
        .request(request.body(full("")).unwrap())
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, body_text(response).await)
}

async fn post_with(gateway: &TestGateway, path: &str, token: &str) -> Answer {
    post_as(gateway, path, token, json!({})).await
}

/// A JSON call with the session's bearer token.
pub(crate) async fn post_as(
    gateway: &impl Listening,
    path: &str,
    token: &str,
    body: Value,
) -> Answer {
    let request = Request::builder()
        .method(Method::POST)
        .uri(gateway.url(path))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body.to_string()))
        .unwrap();
    read_answer(gateway.client(false).request(request).await.unwrap()).await
}

#[tokio::test]
async fn a_json_login_opens_protected_routes_until_logout() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(&upstream.url())).await;
    let (secret, codes) = enroll(&gateway, "alice").await;

    // No session: 401 with a Bearer challenge for API clients, a redirect for browsers.
    let (status, headers, body) = call(&gateway, "/api/records/7?full=1", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("WG-SESSION-001"), "{body}");
    assert_eq!(
        headers[header::WWW_AUTHENTICATE],
        r#"Bearer realm="wardgate""#
    );
    let (status, headers, _) = call(
        &gateway,
        "/api/records/7?full=1",
        None,
        &[("accept", "text/html")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers[header::LOCATION],
        "/.wardgate/login?return_to=/api/records/7%3Ffull%3D1&reason=login"
    );

    // The JSON API takes JSON only: a cross-site form cannot post to it.
    let form = Request::builder()
        .method(Method::POST)
        .uri(gateway.url(LOGIN))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(full(format!("user=alice&password={STRONG}")))
        .unwrap();
    let response = gateway.client(false).request(form).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body_text(response).await.contains("WG-BODY-002"));

    // Wrong password and unknown user: the same answer, byte for byte.
    let wrong = post(
        &gateway,
        LOGIN,
        json!({ "user": "alice", "password": "Wrong password 1!" }),
    )
    .await;
    let unknown = post(
        &gateway,
        LOGIN,
        json!({ "user": "nobody", "password": STRONG }),
    )
    .await;
    assert_refused(&wrong, StatusCode::UNAUTHORIZED, "WG-AUTH-009");
    assert_eq!((wrong.status, &wrong.body), (unknown.status, &unknown.body));

    // Password, then a second factor: a recovery code first (spent once), then TOTP.
    let started = post(
        &gateway,
        LOGIN,
        json!({ "user": "alice", "password": STRONG }),
    )
    .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    assert_lists_all(&started.body["factors"], &["totp", "recovery_code"]);
    let challenge = started.body["challenge"].clone();
    let answer = post(
        &gateway,
        "/.wardgate/api/login/totp",
        json!({ "challenge": challenge, "code": "12345" }),
    )
    .await;
    assert_refused(&answer, StatusCode::UNAUTHORIZED, "WG-AUTH-011");
    let answer = post(
        &gateway,
        "/.wardgate/api/login/recovery",
        json!({ "challenge": challenge, "code": codes[0] }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        (
            answer.body["recovery_codes_left"].as_u64(),
            answer.body["reenroll"].as_bool()
        ),
        (Some(9), Some(true))
    );
    let token = answer.body["token"].as_str().unwrap().to_owned();
    assert_eq!(answer.body["token_type"], "Bearer");
    assert!(token.starts_with("wgs_") && token.len() == 68, "{token}");
    // The challenge is used up.
    let again = post(
        &gateway,
        "/.wardgate/api/login/totp",
        json!({ "challenge": challenge, "code": next_code(&secret) }),
    )
    .await;
    assert_refused(&again, StatusCode::UNAUTHORIZED, "WG-AUTH-010");

    // Through the proxy: the upstream gets the identity the route asks for, nothing spoofed,
    // never the gateway's token; the client learns when its session ends.
    let spoofed = [
        ("x-wardgate-user", "mallory"),
        ("x-remote-user", "root"),
        ("x-forwarded-user", "root"),
        ("x-auth-request-email", "root@example.org"),
    ];
    let (status, headers, body) = call(&gateway, "/api/records/7", Some(&token), &spoofed).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expires_in: u64 = headers["wardgate-session-expires-in"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((890..=900).contains(&expires_in), "{expires_in}");
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(seen.headers["x-wardgate-user"], "alice");
    assert_eq!(seen.headers["x-wardgate-roles"], "physician");
    assert_eq!(seen.headers["x-wardgate-user-id"].len(), 32);
    for absent in [
        "x-remote-user",
        "x-forwarded-user",
        "x-auth-request-email",
        "authorization",
    ] {
        assert!(
            !seen.headers.contains_key(absent),
            "{absent} reached the upstream"
        );
    }
    // The assertion verifies with the served JWKS, for this route only, and not once tampered.
    let (_, _, jwks) = call(&gateway, "/.wardgate/jwks.json", None, &[]).await;
    let jwks: Value = serde_json::from_str(&jwks).unwrap();
    let assertion = seen.headers["x-wardgate-assertion"].to_str().unwrap();
    let now = unix_now();
    let claims = wardgate::assertion::verify(&jwks, assertion, "records", now).unwrap();
    assert_eq!(
        claims["sub"],
        seen.headers["x-wardgate-user-id"].to_str().unwrap()
    );
    assert_eq!(claims["roles"], json!(["physician"]));
    assert!(
        claims.get("name").is_none(),
        "only the fields the route asks for"
    );
    assert!(wardgate::assertion::verify(&jwks, assertion, "other-route", now).is_err());
    let mut tampered = assertion.to_owned();
    tampered.insert(assertion.find('.').unwrap() + 5, 'A');
    assert!(wardgate::assertion::verify(&jwks, &tampered, "records", now).is_err());

    // Public routes still get no identity, and a spoofed one is removed there too.
    call(&gateway, "/public/x", Some(&token), &spoofed).await;
    let seen = upstream.seen().pop().unwrap();
    assert!(!seen.headers.contains_key("x-wardgate-user"));
    assert!(!seen.headers.contains_key("x-remote-user"));
    assert!(
        !seen.headers.contains_key("authorization"),
        "the gateway's token stays home"
    );

    // The session describes itself; operators see it without its token.
    let (_, _, body) = call(&gateway, "/.wardgate/api/session", Some(&token), &[]).await;
    let described: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(described["user"], "alice");
    let listed = admin(&gateway, Method::GET, "/admin/sessions?user=alice", "").await;
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["sessions"][0]["client"], "127.0.0.1");
    assert!(!listed.to_string().contains(&token[4..]));

    // Forged, truncated and garbage tokens: 401, never 500.
    let forged = format!("wgs_{}", "0".repeat(64));
    for bad in [forged.as_str(), &token[..40], "garbage", "wgs_!!!!"] {
        let (status, headers, _) = call(&gateway, "/api/records/7", Some(bad), &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
        assert!(
            headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
    }

    // Logout ends it at once.
    let answer = post_with(&gateway, "/.wardgate/api/logout", &token).await;
    assert_eq!(
        (answer.status, answer.body["ended"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    let (status, _, body) = call(&gateway, "/api/records/7", Some(&token), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // A TOTP login; then disabling the account ends the session before its next request.
    let started = post(
        &gateway,
        LOGIN,
        json!({ "user": "alice", "password": STRONG }),
    )
    .await;
    let answer = post(
        &gateway,
        "/.wardgate/api/login/totp",
        json!({ "challenge": started.body["challenge"], "code": next_code(&secret) }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let token = answer.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        call(&gateway, "/api/records/7", Some(&token), &[]).await.0,
        StatusCode::OK
    );
    let disabled = admin(&gateway, Method::POST, "/admin/users/alice/disable", "").await;
    assert_eq!(disabled["sessions_ended"], 1, "{disabled}");
    assert_eq!(
        call(&gateway, "/api/records/7", Some(&token), &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    // And a disabled account cannot log in: the same answer as a wrong password.
    let answer = post(
        &gateway,
        LOGIN,
        json!({ "user": "alice", "password": STRONG }),
    )
    .await;
    assert_eq!((answer.status, &answer.body), (wrong.status, &wrong.body));
}

#[tokio::test]
async fn repeated_failures_lock_the_account_with_the_same_answer() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(&upstream.url())).await;
    enroll(&gateway, "bob").await;
    let wrong = json!({ "user": "bob", "password": "Not the password 9!" });
    let first = post(&gateway, LOGIN, wrong.clone()).await;
    for _ in 0..5 {
        post(&gateway, LOGIN, wrong.clone()).await;
    }
    // Locked now: even the right password gets the very same refusal.
    let right = post(
        &gateway,
        LOGIN,
        json!({ "user": "bob", "password": STRONG }),
    )
    .await;
    assert_refused(&right, StatusCode::UNAUTHORIZED, "WG-AUTH-009");
    assert_eq!((right.status, &right.body), (first.status, &first.body));
}

#[tokio::test]
async fn a_lockout_is_reported_with_its_end() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(&upstream.url())).await;
    enroll(&gateway, "kim").await;
    let mut events = gateway.events.subscribe();
    let wrong = json!({ "user": "kim", "password": "Not the password 9!" });
    for _ in 0..5 {
        post(&gateway, LOGIN, wrong.clone()).await;
    }
    let mut reported = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let SecurityEvent::LockedOut { what, until } = &*event {
            reported.push((what.clone(), *until));
        }
    }
    // Both locks, each for the first back-off of a minute from the fifth failure.
    let (account, address) = (Locked::Account("kim".into()), Locked::Address(LOOPBACK));
    assert_eq!(reported.len(), 2, "{reported:?}");
    for (what, until) in &reported {
        assert!(*what == account || *what == address, "{reported:?}");
        assert!(
            (unix_now() + 58..=unix_now() + 61).contains(until),
            "{reported:?}"
        );
    }
    assert_ne!(reported[0].0, reported[1].0, "{reported:?}");
}

const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

const WEBAUTHN_START: &str = "/.wardgate/api/login/webauthn/start";
const WEBAUTHN_FINISH: &str = "/.wardgate/api/login/webauthn/finish";

#[tokio::test]
async fn a_challenge_accepts_only_the_factors_it_offered_and_step_up_rotates_the_token() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(&upstream.url())).await;
    let (secret, codes) = enroll(&gateway, "hana").await;

    let unknown = post(&gateway, WEBAUTHN_START, json!({ "challenge": "nope" })).await;
    assert_refused(&unknown, StatusCode::UNAUTHORIZED, "WG-AUTH-010");
    let started = post(
        &gateway,
        LOGIN,
        json!({ "user": "hana", "password": STRONG }),
    )
    .await;
    assert_eq!(strings(&started.body["factors"]), ["totp", "recovery_code"]);
    let challenge = started.body["challenge"].clone();

    // No passkey enrolled: the WebAuthn calls are refused, and the challenge survives them.
    let start = post(&gateway, WEBAUTHN_START, json!({ "challenge": challenge })).await;
    assert_refused(&start, StatusCode::UNAUTHORIZED, "WG-AUTH-010");
    let forged = json!({ "challenge": challenge, "ceremony": "x", "credential": { "id": "AAAA" } });
    let finish = post(&gateway, WEBAUTHN_FINISH, forged).await;
    assert_refused(&finish, StatusCode::UNAUTHORIZED, "WG-AUTH-011");
    let partial = post(&gateway, WEBAUTHN_FINISH, json!({ "challenge": challenge })).await;
    assert_refused(&partial, StatusCode::BAD_REQUEST, "WG-AUTH-007");
    let done = post(
        &gateway,
        "/.wardgate/api/login/totp",
        json!({ "challenge": challenge, "code": next_code(&secret) }),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let token = done.body["token"].as_str().unwrap().to_owned();

    // Step-up over the API: the app only (a recovery code is not a fresh proof), a new token.
    let up = post_with(&gateway, "/.wardgate/api/step-up", &token).await;
    assert_eq!(up.status, StatusCode::OK, "{}", up.body);
    assert_eq!(strings(&up.body["factors"]), ["totp"]);
    let challenge = up.body["challenge"].clone();
    let recovery = post(
        &gateway,
        "/.wardgate/api/login/recovery",
        json!({ "challenge": challenge, "code": codes[0] }),
    )
    .await;
    assert_refused(&recovery, StatusCode::UNAUTHORIZED, "WG-AUTH-011");
    // One time step later on the gateway's clock, so the code is a new one.
    gateway.advance(30);
    let stepped = post(
        &gateway,
        "/.wardgate/api/login/totp",
        json!({ "challenge": challenge, "code": code_at(&secret, 60) }),
    )
    .await;
    assert_eq!(stepped.status, StatusCode::OK, "{}", stepped.body);
    let rotated = stepped.body["token"].as_str().unwrap();
    assert_ne!(rotated, token);
    let (status, _, _) = call(&gateway, "/api/records/1", Some(&token), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = call(&gateway, "/api/records/1", Some(rotated), &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn passkey_enrollment_calls_refuse_unknown_enrollments_and_bad_credentials() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(&upstream.url())).await;
    let start_path = "/.wardgate/api/enroll/webauthn/start";
    let finish_path = "/.wardgate/api/enroll/webauthn/finish";
    let unknown = post(&gateway, start_path, json!({ "enrollment": "nope" })).await;
    assert_refused(&unknown, StatusCode::BAD_REQUEST, "WG-AUTH-004");

    let token = add_user(&gateway, "ivy").await;
    let set = post(
        &gateway,
        PASSWORD,
        json!({ "token": token, "password": STRONG }),
    )
    .await;
    let enrollment = set.body["enrollment"].clone();
    let started = post(&gateway, start_path, json!({ "enrollment": enrollment })).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let options = &started.body["options"]["publicKey"];
    assert_eq!(options["rp"]["id"], "localhost");
    assert_eq!(options["user"]["name"], "ivy");
    assert_eq!(
        options["authenticatorSelection"]["userVerification"],
        "required"
    );
    let ceremony = started.body["ceremony"].clone();
    let forged = json!({
        "enrollment": enrollment,
        "ceremony": ceremony,
        "credential": {
            "id": "AAAA", "rawId": "AAAA", "type": "public-key",
            "response": { "attestationObject": "AAAA", "clientDataJSON": "AAAA" }
        }
    });
    let refused = post(&gateway, finish_path, forged.clone()).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "WG-AUTH-013");
    // The ceremony ended with the refusal; the enrollment itself is still open.
    let again = post(&gateway, finish_path, forged).await;
    assert_refused(&again, StatusCode::BAD_REQUEST, "WG-AUTH-013");
    let secret = set.body["totp"]["secret"].as_str().unwrap();
    let done = post(
        &gateway,
        TOTP,
        json!({ "enrollment": enrollment, "code": oathtool(secret) }),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);

    // Without `auth.webauthn` the calls do not exist.
    let plain = TestGateway::start(&simple_config(&upstream.url())).await;
    let off = post(&plain, start_path, json!({ "enrollment": "x" })).await;
    assert_refused(&off, StatusCode::NOT_FOUND, "WG-AUTH-006");
}

#[tokio::test]
async fn roles_can_be_restricted_to_passkeys() {
    let upstream = MockUpstream::recording().await;
    let config = config(&upstream.url()).replace(
        "auth:\n",
        "auth:\n  mfa:\n    roles:\n      physician: [webauthn, recovery_code]\n",
    );
    let gateway = TestGateway::start(&config).await;

    // A physician is offered a passkey only: no authenticator app, and a code is refused.
    let token = add_user(&gateway, "jo").await;
    let set = post(
        &gateway,
        PASSWORD,
        json!({ "token": token, "password": STRONG }),
    )
    .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    assert_eq!(strings(&set.body["methods"]), ["webauthn", "recovery_code"]);
    assert!(set.body.get("totp").is_none(), "{}", set.body);
    let app = post(
        &gateway,
        TOTP,
        json!({ "enrollment": set.body["enrollment"], "code": "123456" }),
    )
    .await;
    assert_refused(&app, StatusCode::BAD_REQUEST, "WG-AUTH-013");

    // A nurse enrolls the app; made a physician later, the app no longer logs them in.
    let created = admin(
        &gateway,
        Method::POST,
        "/admin/users",
        &json!({ "name": "kim", "roles": ["nurse"] }).to_string(),
    )
    .await;
    let token = created["enrollment"]["token"].as_str().unwrap();
    let set = post(
        &gateway,
        PASSWORD,
        json!({ "token": token, "password": STRONG }),
    )
    .await;
    assert_eq!(
        strings(&set.body["methods"]),
        ["webauthn", "totp", "recovery_code"]
    );
    let secret = set.body["totp"]["secret"].as_str().unwrap();
    let done = post(
        &gateway,
        TOTP,
        json!({ "enrollment": set.body["enrollment"], "code": oathtool(secret) }),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let nurse = post(
        &gateway,
        LOGIN,
        json!({ "user": "kim", "password": STRONG }),
    )
    .await;
    assert_eq!(strings(&nurse.body["factors"]), ["totp", "recovery_code"]);
    admin(
        &gateway,
        Method::PUT,
        "/admin/users/kim/roles",
        &json!({ "roles": ["physician"] }).to_string(),
    )
    .await;
    let physician = post(
        &gateway,
        LOGIN,
        json!({ "user": "kim", "password": STRONG }),
    )
    .await;
    assert_refused(&physician, StatusCode::FORBIDDEN, "WG-AUTH-012");
}

#[tokio::test]
async fn another_passkey_needs_a_session_and_a_fresh_second_factor() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(&upstream.url())).await;
    let start = "/.wardgate/api/passkeys/start";
    let finish = "/.wardgate/api/passkeys/finish";
    let anonymous = post(&gateway, start, json!({})).await;
    assert_refused(&anonymous, StatusCode::UNAUTHORIZED, "WG-SESSION-001");

    let (secret, _) = enroll(&gateway, "lee").await;
    let token = totp_login(&gateway, "lee", &secret).await;
    let fresh = post_with(&gateway, start, &token).await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.body);
    assert_eq!(fresh.body["options"]["publicKey"]["user"]["name"], "lee");
    let forged = json!({ "ceremony": fresh.body["ceremony"], "credential": { "id": "AAAA" } });
    let forged = post_as(&gateway, finish, &token, forged).await;
    assert_refused(&forged, StatusCode::BAD_REQUEST, "WG-AUTH-013");

    // Nine and a half minutes later the second factor is still fresh enough; eleven minutes
    // after it (still inside the idle timeout), too old.
    gateway.advance(9 * 60 + 30);
    let still = post_with(&gateway, start, &token).await;
    assert_eq!(still.status, StatusCode::OK, "{}", still.body);
    gateway.advance(90);
    let stale = post_with(&gateway, start, &token).await;
    assert_refused(&stale, StatusCode::UNAUTHORIZED, "WG-SESSION-004");
    let shown = admin(&gateway, Method::GET, "/admin/users/lee", "").await;
    assert_eq!(shown["user"]["mfa"]["webauthn_credentials"], 0, "{shown}");
}

#[tokio::test]
async fn an_idle_session_ends_with_its_reason_for_browsers_and_apps() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(&upstream.url())).await;
    let (secret, codes) = enroll(&gateway, "mo").await;
    // Two sessions: one for a browser (app code), one for an app (a recovery code).
    let mut tokens = Vec::new();
    for (path, code) in [
        ("/.wardgate/api/login/totp", next_code(&secret)),
        ("/.wardgate/api/login/recovery", codes[0].clone()),
    ] {
        let started = post(&gateway, LOGIN, json!({ "user": "mo", "password": STRONG })).await;
        let done = post(
            &gateway,
            path,
            json!({ "challenge": started.body["challenge"], "code": code }),
        )
        .await;
        tokens.push(done.body["token"].as_str().unwrap().to_owned());
    }
    let (status, headers, _) = call(&gateway, "/api/records/3", Some(&tokens[1]), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["wardgate-session-expires-in"], "900");

    // Fifteen minutes and a second without a request: idle (the default 15m).
    gateway.advance(15 * 60 + 1);
    let cookie = format!("__Host-wardgate-session={}", tokens[0]);
    let (status, headers, _) = call(
        &gateway,
        "/api/records/3",
        None,
        &[("cookie", &cookie), ("accept", "text/html")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers[header::LOCATION],
        "/.wardgate/login?return_to=/api/records/3&reason=idle"
    );
    let (status, headers, body) = call(&gateway, "/api/records/3", Some(&tokens[1]), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("WG-SESSION-002"), "{body}");
    assert_eq!(
        headers[header::WWW_AUTHENTICATE],
        r#"Bearer realm="wardgate", error="invalid_token", error_description="idle""#
    );
    // Ended for good: the next try is a session that does not exist.
    let (_, _, body) = call(&gateway, "/api/records/3", Some(&tokens[1]), &[]).await;
    assert!(body.contains("WG-SESSION-001"), "{body}");
}

/// Logs `user` in with a recovery code; returns the bearer token, already used once (cached).
pub(crate) async fn cached_session(gateway: &TestGateway, user: &str, code: &str) -> String {
    let started = post(gateway, LOGIN, json!({ "user": user, "password": STRONG })).await;
    let done = post(
        gateway,
        "/.wardgate/api/login/recovery",
        json!({ "challenge": started.body["challenge"], "code": code }),
    )
    .await;
    let token = done.body["token"].as_str().unwrap().to_owned();
    let (status, _, _) = call(gateway, "/api/records/1", Some(&token), &[]).await;
    assert_eq!(status, StatusCode::OK);
    token
}

async fn refused(gateway: &TestGateway, token: &str) -> bool {
    call(gateway, "/api/records/1", Some(token), &[]).await.0 == StatusCode::UNAUTHORIZED
}

#[tokio::test]
async fn every_way_of_ending_a_session_refuses_its_very_next_request() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(&upstream.url())).await;
    let (_, codes) = enroll(&gateway, "ned").await;

    // Logout everywhere: both sessions.
    let first = cached_session(&gateway, "ned", &codes[0]).await;
    let second = cached_session(&gateway, "ned", &codes[1]).await;
    let ended = post_with(&gateway, "/.wardgate/api/logout-all", &first).await;
    assert_eq!(ended.body["ended"], 2, "{}", ended.body);
    assert!(refused(&gateway, &first).await && refused(&gateway, &second).await);

    // An operator ends one session by its id.
    let token = cached_session(&gateway, "ned", &codes[2]).await;
    let listed = admin(&gateway, Method::GET, "/admin/sessions?user=ned", "").await;
    let id = listed["sessions"][0]["id"].as_str().unwrap().to_owned();
    let deleted = admin(
        &gateway,
        Method::DELETE,
        &format!("/admin/sessions/{id}"),
        "",
    )
    .await;
    assert_eq!(deleted["ended"], 1, "{deleted}");
    assert!(refused(&gateway, &token).await);

    // An operator logs the user out everywhere; then an MFA reset; then a password reset.
    for (action, code) in [("logout", &codes[3]), ("reset-mfa", &codes[4])] {
        let token = cached_session(&gateway, "ned", code).await;
        let path = format!("/admin/users/ned/{action}");
        let answer = admin(&gateway, Method::POST, &path, "").await;
        assert_eq!(answer["sessions_ended"], 1, "{action}: {answer}");
        assert!(refused(&gateway, &token).await, "{action}");
    }
    let (_, codes) = enroll(&gateway, "ola").await;
    let token = cached_session(&gateway, "ola", &codes[0]).await;
    let answer = admin(
        &gateway,
        Method::POST,
        "/admin/users/ola/reset-password",
        "",
    )
    .await;
    assert_eq!(answer["sessions_ended"], 1, "{answer}");
    assert!(refused(&gateway, &token).await);
}

#[tokio::test]
async fn a_login_ends_the_session_the_client_still_carried() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(&upstream.url())).await;
    let (_, codes) = enroll(&gateway, "pat").await;
    let old = cached_session(&gateway, "pat", &codes[0]).await;
    // The same client logs in again, still sending its old token.
    let started = post(
        &gateway,
        LOGIN,
        json!({ "user": "pat", "password": STRONG }),
    )
    .await;
    let challenge = json!({ "challenge": started.body["challenge"], "code": codes[1] });
    let done = post_as(&gateway, "/.wardgate/api/login/recovery", &old, challenge).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let new = done.body["token"].as_str().unwrap();
    assert_ne!(new, old);
    assert!(refused(&gateway, &old).await);
    assert!(!refused(&gateway, new).await);
}
