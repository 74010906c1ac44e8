//! The enrollment API over real TLS: the token from the admin API becomes a password, an
//! authenticator (codes from `oathtool`, an independent generator) and recovery codes; nothing
//! under `/.wardgate/` ever reaches the upstream.

use std::process::Command;

use http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use crate::harness::*;

pub(crate) const PASSWORD: &str = "/.wardgate/api/enroll/password";
pub(crate) const TOTP: &str = "/.wardgate/api/enroll/totp";
pub(crate) const STRONG: &str = "Violet lanterns hum 7 quiet tunes!";

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Value,
}

pub(crate) async fn send(
    gateway: &impl Listening,
    method: Method,
    path: &str,
    body: String,
) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(gateway.url(path))
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .unwrap();
    read_answer(gateway.client(false).request(request).await.unwrap()).await
}

/// A JSON answer, read whole.
pub(crate) async fn read_answer(response: http::Response<hyper::body::Incoming>) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = body_text(response).await;
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    }
}

pub(crate) async fn post(gateway: &impl Listening, path: &str, body: Value) -> Answer {
    send(gateway, Method::POST, path, body.to_string()).await
}

pub(crate) fn assert_refused(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (status, Some(code)),
        "{}",
        answer.body
    );
    assert_eq!(answer.headers[header::CACHE_CONTROL], "no-store");
}

/// The code an authenticator app shows now.
pub(crate) fn oathtool(secret: &str) -> String {
    let output = Command::new("oathtool")
        .args(["--totp", "--base32", secret])
        .output()
        .expect("oathtool is required (apt-get install -y oathtool; scripts/test.sh does it)");
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn wrong_code(right: &str) -> &'static str {
    if right == "000000" {
        "111111"
    } else {
        "000000"
    }
}

#[tokio::test]
async fn a_new_user_enrolls_a_password_an_authenticator_and_recovery_codes() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let token = add_user(&gateway, "alice").await;

    let answer = post(
        &gateway,
        PASSWORD,
        json!({ "token": "00".repeat(32), "password": STRONG }),
    )
    .await;
    assert_refused(&answer, StatusCode::BAD_REQUEST, "WG-AUTH-001");

    // A weak password lists every failed rule and leaves the link usable.
    let answer = post(
        &gateway,
        PASSWORD,
        json!({ "token": token, "password": "alice" }),
    )
    .await;
    assert_refused(&answer, StatusCode::BAD_REQUEST, "WG-AUTH-002");
    assert_lists_all(
        &answer.body["reasons"],
        &[
            "Use at least 12 characters.",
            "Add an upper-case letter.",
            "Add a digit, such as 7.",
            "Don't use your user name in your password.",
        ],
    );

    let answer = post(
        &gateway,
        PASSWORD,
        json!({ "token": token, "password": STRONG }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(answer.headers["x-content-type-options"], "nosniff");
    let enrollment = answer.body["enrollment"].as_str().unwrap().to_owned();
    assert_eq!(enrollment.len(), 64);
    let secret = answer.body["totp"]["secret"].as_str().unwrap().to_owned();
    let otpauth = answer.body["totp"]["otpauth"].as_str().unwrap();
    assert!(
        otpauth.starts_with("otpauth://totp/Wardgate:alice?") && otpauth.contains(&secret),
        "{otpauth}"
    );

    let right = oathtool(&secret);
    let answer = post(
        &gateway,
        TOTP,
        json!({ "enrollment": enrollment, "code": wrong_code(&right) }),
    )
    .await;
    assert_refused(&answer, StatusCode::BAD_REQUEST, "WG-AUTH-005");

    let answer = post(
        &gateway,
        TOTP,
        json!({ "enrollment": enrollment, "code": oathtool(&secret) }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.headers[header::CACHE_CONTROL], "no-store");
    let codes = strings(&answer.body["recovery_codes"]);
    let distinct: std::collections::BTreeSet<_> = codes.iter().collect();
    assert_eq!((codes.len(), distinct.len()), (10, 10));
    assert!(codes.iter().all(|c| c.len() == 19), "{codes:?}");

    // Done once: the link and the ceremony are gone.
    let answer = post(
        &gateway,
        PASSWORD,
        json!({ "token": token, "password": STRONG }),
    )
    .await;
    assert_refused(&answer, StatusCode::BAD_REQUEST, "WG-AUTH-001");
    let answer = post(
        &gateway,
        TOTP,
        json!({ "enrollment": enrollment, "code": oathtool(&secret) }),
    )
    .await;
    assert_refused(&answer, StatusCode::BAD_REQUEST, "WG-AUTH-004");

    assert_enrolled(&gateway, "alice").await;
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn five_wrong_codes_drop_the_ceremony() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let token = add_user(&gateway, "bob").await;
    let answer = post(
        &gateway,
        PASSWORD,
        json!({ "token": token, "password": STRONG }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let enrollment = answer.body["enrollment"].as_str().unwrap().to_owned();
    let secret = answer.body["totp"]["secret"].as_str().unwrap().to_owned();

    let wrong = wrong_code(&oathtool(&secret));
    for code in ["12345", "abcdef", wrong, wrong, wrong] {
        let answer = post(
            &gateway,
            TOTP,
            json!({ "enrollment": enrollment, "code": code }),
        )
        .await;
        assert_refused(&answer, StatusCode::BAD_REQUEST, "WG-AUTH-005");
    }
    let answer = post(
        &gateway,
        TOTP,
        json!({ "enrollment": enrollment, "code": oathtool(&secret) }),
    )
    .await;
    assert_refused(&answer, StatusCode::BAD_REQUEST, "WG-AUTH-004");
    let answer = post(
        &gateway,
        TOTP,
        json!({ "enrollment": "ab".repeat(32), "code": "123456" }),
    )
    .await;
    assert_refused(&answer, StatusCode::BAD_REQUEST, "WG-AUTH-004");

    let shown = admin(&gateway, Method::GET, "/admin/users/bob", "").await;
    assert_eq!(shown["user"]["mfa"]["totp"], false);
    assert_eq!(shown["user"]["mfa"]["enrollment_required"], true);
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn the_reserved_prefix_is_never_proxied_and_refuses_bad_requests() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;

    for path in ["/.wardgate/api/enroll", "/.wardgate/api/"] {
        let answer = send(&gateway, Method::POST, path, "{}".into()).await;
        assert_refused(&answer, StatusCode::NOT_FOUND, "WG-AUTH-006");
    }
    // Outside the API the same refusal is a page (tests/integration/browser.rs).

    let answer = send(&gateway, Method::GET, PASSWORD, String::new()).await;
    assert_refused(&answer, StatusCode::METHOD_NOT_ALLOWED, "WG-METHOD-001");
    assert_eq!(answer.headers[header::ALLOW], "POST");

    for body in [
        "not json",
        r#"{"token":"00"}"#,
        r#"{"token":"00","password":"x","admin":true}"#,
    ] {
        let answer = send(&gateway, Method::POST, PASSWORD, body.into()).await;
        assert_refused(&answer, StatusCode::BAD_REQUEST, "WG-AUTH-007");
    }
    let answer = send(&gateway, Method::POST, TOTP, r#"{"code":"1"}"#.into()).await;
    assert_refused(&answer, StatusCode::BAD_REQUEST, "WG-AUTH-007");

    let huge = json!({ "token": "00", "password": "x".repeat(9 * 1024) }).to_string();
    let answer = send(&gateway, Method::POST, PASSWORD, huge).await;
    assert_refused(&answer, StatusCode::PAYLOAD_TOO_LARGE, "WG-BODY-001");

    // The path rules still apply before the prefix is recognized.
    let answer = send(&gateway, Method::POST, "/.wardgate/%2e%2e/x", "{}".into()).await;
    assert_refused(&answer, StatusCode::BAD_REQUEST, "WG-PATH-005");

    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
}

#[tokio::test]
async fn a_bad_totp_setting_stops_the_start_before_a_port_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    let config = config_with(
        "  backend: { url: \"http://127.0.0.1:1\" }",
        "  - { path: /**, upstream: backend, auth: none }",
        "auth:\n  totp:\n    period: 7s\n",
    );
    std::fs::write(&file, config).unwrap();
    let error = start_error(&file).await;
    assert!(
        error.starts_with("auth.totp: ") && error.contains("period"),
        "{error}"
    );
    let checked = Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(checked.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&checked.stderr).contains("auth.totp"));
}

#[tokio::test]
async fn a_disabled_account_cannot_enroll() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let token = add_user(&gateway, "mallory").await;
    admin(&gateway, Method::POST, "/admin/users/mallory/disable", "").await;
    let answer = post(
        &gateway,
        "/.wardgate/api/enroll/password",
        json!({ "token": token, "password": "correct horse battery staple 42" }),
    )
    .await;
    assert_refused(&answer, StatusCode::BAD_REQUEST, "WG-AUTH-001");
    let shown = admin(&gateway, Method::GET, "/admin/users/mallory", "").await;
    assert_eq!(shown["user"]["password_set"], false);
    assert!(upstream.seen().is_empty());
}
