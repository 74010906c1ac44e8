//! Login hardening over real TLS: enrollment links that a newer one revokes.

use http::{Method, StatusCode};
use serde_json::json;

use crate::enrollment::{Answer, PASSWORD, STRONG, assert_refused, post};
use crate::harness::*;

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
