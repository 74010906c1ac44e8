//! Login hardening over real TLS: enrollment links that a newer one revokes, and TOTP parameters
//! that stay with the enrollment.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::enrollment::{Answer, PASSWORD, STRONG, TOTP, assert_refused, post};
use crate::harness::*;
use crate::sessions::{code_of_digits, enroll, next_code};

const LOGIN: &str = "/.wardgate/api/login";
const LOGIN_TOTP: &str = "/.wardgate/api/login/totp";

/// The password step: the challenge it opened.
async fn challenge(gateway: &TestGateway, user: &str) -> Value {
    let started = post(gateway, LOGIN, json!({ "user": user, "password": STRONG })).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    started.body["challenge"].clone()
}

/// The second step: the app's `code` for `challenge`.
async fn app_code(gateway: &TestGateway, challenge: &Value, code: &str) -> Answer {
    post(
        gateway,
        LOGIN_TOTP,
        json!({ "challenge": challenge, "code": code }),
    )
    .await
}

/// Password, then the app's code: the new session's token.
async fn log_in(gateway: &TestGateway, user: &str, code: &str) -> String {
    let done = app_code(gateway, &challenge(gateway, user).await, code).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    done.body["token"].as_str().unwrap().to_owned()
}

/// The first step of an enrollment link.
async fn set_password(gateway: &TestGateway, token: &str) -> Answer {
    post(
        gateway,
        PASSWORD,
        json!({ "token": token, "password": STRONG }),
    )
    .await
}

#[tokio::test]
async fn a_new_enrollment_link_revokes_the_older_ones() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let mut links = vec![add_user(&gateway, "hana").await];
    for action in ["reset-password", "reset-mfa"] {
        let path = format!("/admin/users/hana/{action}");
        let answer = admin(&gateway, Method::POST, &path, "").await;
        links.push(answer["enrollment"]["token"].as_str().unwrap().to_owned());
    }
    let newest = links.pop().unwrap();
    for older in links {
        let answer = set_password(&gateway, &older).await;
        assert_refused(&answer, StatusCode::BAD_REQUEST, "WG-AUTH-001");
    }
    let answer = set_password(&gateway, &newest).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn an_enrolled_app_keeps_its_digits_when_the_config_changes() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let (six, _) = enroll(&gateway, "ines").await;
    let eight_digits = simple_config(&upstream.url()) + "auth:\n  totp: { digits: 8 }\n";
    let gateway = gateway.restart(&eight_digits).await;

    // Ines's app still shows six digits, and they still log her in.
    log_in(&gateway, "ines", &next_code(&six)).await;

    // An enrollment made now is for eight, checked against oathtool's eight digits.
    let set = set_password(&gateway, &add_user(&gateway, "jon").await).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    let otpauth = set.body["totp"]["otpauth"].as_str().unwrap();
    assert!(otpauth.contains("digits=8"), "{otpauth}");
    let eight = set.body["totp"]["secret"].as_str().unwrap();
    let code = code_of_digits(eight, 8, 0);
    let confirm = json!({ "enrollment": set.body["enrollment"], "code": code });
    let done = post(&gateway, TOTP, confirm).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let jons = challenge(&gateway, "jon").await;
    let short = app_code(&gateway, &jons, &code_of_digits(eight, 6, 30)).await;
    assert_refused(&short, StatusCode::UNAUTHORIZED, "WG-AUTH-011");
    let done = app_code(&gateway, &jons, &code_of_digits(eight, 8, 30)).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
}
