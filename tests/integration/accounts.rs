//! Account management on the admin listener (the running gateway owns its identity store).

use http::{Method, Request, StatusCode};

use crate::harness::*;

async fn call(
    gateway: &TestGateway,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(gateway.admin_url(path));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = plain_client()
        .request(request.body(full(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    (
        status,
        serde_json::from_str(&body_text(response).await).unwrap(),
    )
}

#[tokio::test]
async fn operators_manage_accounts_with_the_admin_token() {
    use std::os::unix::fs::PermissionsExt;
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let token_file = gateway.dir.path().join("data/admin.token");
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let token = std::fs::read_to_string(token_file).unwrap();
    let token = Some(token.trim());

    for presented in [None, Some("wrong"), Some("")] {
        let (status, body) = call(&gateway, presented, Method::GET, "/admin/users", "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "WG-ADMIN-003");
    }

    let (status, created) = call(
        &gateway,
        token,
        Method::POST,
        "/admin/users",
        r#"{"name":"alice","email":"alice@example.org","roles":["physician"]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let enrollment = created["enrollment"]["token"].as_str().unwrap();
    assert_eq!(enrollment.len(), 64);
    assert!(created["enrollment"]["expires"].as_u64().unwrap() > 0);
    let user = &created["user"];
    assert_eq!(user["roles"], serde_json::json!(["physician"]));
    assert_eq!(user["password_set"], false);
    assert_eq!(user["mfa"]["enrollment_required"], true);
    assert!(!created.to_string().contains("argon2"));

    let (status, body) = call(
        &gateway,
        token,
        Method::POST,
        "/admin/users",
        r#"{"name":"ALICE"}"#,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("WG-ADMIN-005"))
    );
    for bad in [
        r#"{"name":"a b"}"#,
        r#"{"name":""}"#,
        r#"{"name":"bob","roles":["x y"]}"#,
        r#"{"name":"bob","password":"x"}"#,
        "not json",
    ] {
        let (status, body) = call(&gateway, token, Method::POST, "/admin/users", bad).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("WG-ADMIN-002")),
            "{bad}"
        );
    }

    let (_, listed) = call(&gateway, token, Method::GET, "/admin/users", "").await;
    assert_eq!(listed["users"].as_array().unwrap().len(), 1);
    let (_, disabled) = call(
        &gateway,
        token,
        Method::POST,
        "/admin/users/alice/disable",
        "",
    )
    .await;
    assert_eq!(disabled["user"]["disabled"], true);
    let (_, enabled) = call(
        &gateway,
        token,
        Method::POST,
        "/admin/users/alice/enable",
        "",
    )
    .await;
    assert_eq!(enabled["user"]["disabled"], false);
    let (_, roles) = call(
        &gateway,
        token,
        Method::PUT,
        "/admin/users/alice/roles",
        r#"{"roles":["physician","chief-physician"]}"#,
    )
    .await;
    assert_eq!(
        roles["user"]["roles"],
        serde_json::json!(["physician", "chief-physician"])
    );
    let (_, reset) = call(
        &gateway,
        token,
        Method::POST,
        "/admin/users/alice/reset-password",
        "",
    )
    .await;
    let second = reset["enrollment"]["token"].as_str().unwrap();
    assert_ne!(second, enrollment);
    let (status, mfa) = call(
        &gateway,
        token,
        Method::POST,
        "/admin/users/alice/reset-mfa",
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mfa["user"]["mfa"]["enrollment_required"], true);
    // A new link, so the user can enroll a second factor again.
    let third = mfa["enrollment"]["token"].as_str().unwrap();
    assert_ne!(third, second);
    let (status, body) = call(&gateway, token, Method::GET, "/admin/users/nobody", "").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("WG-ADMIN-004"))
    );

    // The store holds no enrollment token in the clear.
    let raw = std::fs::read(gateway.dir.path().join("data/identity.redb")).unwrap();
    for secret in [enrollment, second] {
        assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
}

#[tokio::test]
async fn an_admin_token_readable_by_others_stops_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let token = dir.path().join("data/admin.token");
    std::fs::write(&token, "0123").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = dir.path().join("gateway.yaml");
    std::fs::write(&file, simple_config("http://127.0.0.1:1")).unwrap();
    let error = start_error(&file).await;
    assert!(error.contains("admin.token"), "{error}");
    assert!(error.contains("0644"), "{error}");
}
