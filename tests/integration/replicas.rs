//! Shared state (`shared_state: redis`): the gateway against a private Redis, and what it does
//! when Redis stops answering: every route and `/readyz` refuse (no request passes uncounted by
//! the rate limits), and everything comes back by itself.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;

use crate::enrollment::{STRONG, post};
use crate::harness::*;
use crate::sessions::{LOGIN, call, config, enroll, totp_login};

#[path = "../servers/redis.rs"]
mod private_redis;
use private_redis::PrivateRedis;

/// The sessions test config, with its state in `redis`.
fn shared(upstream: &str, redis: &PrivateRedis) -> String {
    format!(
        "{}shared_state: {{ kind: redis, url: \"{}\", prefix: wg-it }}\n",
        config(upstream),
        redis.url()
    )
}

/// A GET of `/readyz`: status and body.
async fn readyz(gateway: &TestGateway) -> (StatusCode, String) {
    let url = format!("http://{}/readyz", gateway.admin.unwrap());
    let response = plain_client().request(get(&url)).await.unwrap();
    (response.status(), body_text(response).await)
}

/// Asks `probe` every 100 ms until it holds; the bound only tells a hang from an answer.
async fn eventually<F: AsyncFn() -> bool>(what: &str, probe: F) {
    for _ in 0..150 {
        if probe().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 15 s");
}

#[tokio::test]
async fn without_redis_every_route_refuses_and_comes_back_by_itself() {
    let redis = PrivateRedis::start();
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&shared(&upstream.url(), &redis)).await;
    eventually("ready", async || readyz(&gateway).await.0 == StatusCode::OK).await;
    let (secret, _) = enroll(&gateway, "rita").await;
    let token = totp_login(&gateway, "rita", &secret).await;
    let wrong = post(
        &gateway,
        LOGIN,
        json!({ "user": "rita", "password": "wrong" }),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
    let keys = redis_keys(&redis);
    // The login endpoints' own client limit: its key lives a second after each request (the
    // global limit's, a hundredth of one).
    let login_limit = format!(
        "wg-it:limit:client:{}:127.0.0.1",
        hex::encode(wardgate::own_api::paths::PREFIX)
    );
    for counted in [
        "wg-it:session:",
        &login_limit,
        "wg-it:lockout:address:127.0.0.1",
        "wg-it:lockout:account:",
    ] {
        assert!(
            keys.iter().any(|key| key.starts_with(counted)),
            "{counted}: {keys:?}"
        );
    }
    let (status, _, _) = call(&gateway, "/api/records/1", Some(&token), &[]).await;
    assert_eq!(status, StatusCode::OK, "the session is cached now");

    redis.stop();
    // Even the cached session: the feed that would carry its revocation is down.
    eventually("refused", async || {
        let (status, _, body) = call(&gateway, "/api/records/1", Some(&token), &[]).await;
        status == StatusCode::SERVICE_UNAVAILABLE && body.contains("WG-STORE-001")
    })
    .await;
    eventually("not ready", async || {
        let (status, body) = readyz(&gateway).await;
        status == StatusCode::SERVICE_UNAVAILABLE && body.contains("redis does not answer")
    })
    .await;
    let (status, _, body) = call(&gateway, "/public/x", None, &[]).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "public routes are rate limited too"
    );
    assert!(body.contains("WG-STORE-001"), "{body}");
    let refused = post(
        &gateway,
        LOGIN,
        json!({ "user": "rita", "password": STRONG }),
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.body
    );

    redis.start_again();
    eventually("served again", async || {
        call(&gateway, "/api/records/1", Some(&token), &[]).await.0 == StatusCode::OK
    })
    .await;
    eventually("ready again", async || {
        readyz(&gateway).await.0 == StatusCode::OK
    })
    .await;
    let seen = admin(&gateway, Method::GET, "/admin/sessions?user=rita", "").await;
    assert_eq!(seen["sessions"].as_array().unwrap().len(), 1, "{seen}");

    // A Redis that holds its connections and answers nothing: refused after the deadline,
    // never a request held for ever.
    redis.pause();
    eventually("refused while frozen", async || {
        call(&gateway, "/api/records/1", Some(&token), &[]).await.0
            == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    redis.resume();
    eventually("served after the thaw", async || {
        call(&gateway, "/api/records/1", Some(&token), &[]).await.0 == StatusCode::OK
    })
    .await;
}

/// Every key in the private Redis.
fn redis_keys(redis: &PrivateRedis) -> Vec<String> {
    let port = redis
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let output = std::process::Command::new("redis-cli")
        .args(["-p", &port, "--raw", "KEYS", "*"])
        .output()
        .unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}
