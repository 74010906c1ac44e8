//! Login hardening over real TLS: lockouts that hold against guesses sent all at once, logins
//! and step-ups that end with the user's sessions, bounded challenges per user, enrollment links
//! that a newer one revokes, and TOTP parameters that stay with the enrollment.

use http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::enrollment::{Answer, PASSWORD, STRONG, TOTP, assert_refused, post, read_answer};
use crate::harness::*;
use crate::sessions::{code_at, code_of_digits, enroll, next_code, post_as, unix_now};

const LOGIN: &str = "/.wardgate/api/login";
const LOGIN_TOTP: &str = "/.wardgate/api/login/totp";
const STEP_UP: &str = "/.wardgate/api/step-up";
const WRONG: &str = "Not the password 9!";

/// Loopback is a trusted proxy, so each attempt can come from an address of its own; the login
/// rate limit is out of the way, so that only the lockouts answer.
fn behind_a_proxy(upstream: &str) -> String {
    simple_config(upstream)
        + "forwarding:\n  trusted_proxies: [\"127.0.0.0/8\"]\n\
           auth:\n  login_rate_limit: { per_client: { requests: 1000, per: 1s, burst: 1000 } }\n"
}

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    TestBody,
>;

/// The password step at `url`, as sent over `client` by the client at `address`.
async fn password_step(client: HttpsClient, url: String, attempt: [String; 3]) -> Answer {
    let [user, password, address] = attempt;
    let request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-forwarded-for", address)
        .body(full(
            json!({ "user": user, "password": password }).to_string(),
        ))
        .unwrap();
    read_answer(client.request(request).await.unwrap()).await
}

/// `[user, password, address]`, owned.
fn attempt(user: &str, password: &str, address: &str) -> [String; 3] {
    [user, password, address].map(str::to_owned)
}

/// Sends every password step of `attempts` at once over one HTTP/2 connection and waits for
/// the first answer: an argon2id verification takes tens of milliseconds and looking a user
/// up microseconds, so by then every attempt has reached the lockouts and the others are still
/// being verified. Then sends `last`; returns its answer and all the others.
async fn at_once_then(
    gateway: &TestGateway,
    attempts: Vec<[String; 3]>,
    last: [String; 3],
) -> (Answer, Vec<Answer>) {
    let client = gateway.client(true);
    // The connection is up before the burst: no handshake stands between the attempts.
    let warm = client.request(get(&gateway.url("/warm"))).await.unwrap();
    assert_eq!(warm.status(), StatusCode::OK);
    let mut in_flight = JoinSet::new();
    for attempt in attempts {
        in_flight.spawn(password_step(client.clone(), gateway.url(LOGIN), attempt));
    }
    let first = in_flight.join_next().await.unwrap().unwrap();
    let answer = password_step(client, gateway.url(LOGIN), last).await;
    let mut others = vec![first];
    others.extend(in_flight.join_all().await);
    (answer, others)
}

/// The password step on a connection of its own.
async fn login_from(gateway: &TestGateway, attempt: [String; 3]) -> Answer {
    password_step(gateway.client(false), gateway.url(LOGIN), attempt).await
}

#[tokio::test]
async fn guesses_sent_at_once_lock_the_account_before_the_right_password_gets_through() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&behind_a_proxy(&upstream.url())).await;
    enroll(&gateway, "alice").await;
    // Each guess from an address of its own: only the account's lockout can stop them.
    let guesses = (1..=29)
        .map(|i| attempt("alice", WRONG, &format!("198.51.100.{i}")))
        .collect();
    let right = attempt("alice", STRONG, "203.0.113.1");
    let (answer, guessed) = at_once_then(&gateway, guesses, right.clone()).await;
    assert_refused(&answer, StatusCode::UNAUTHORIZED, "WG-AUTH-009");
    assert_eq!(guessed.len(), 29);
    for guess in &guessed {
        assert_refused(guess, StatusCode::UNAUTHORIZED, "WG-AUTH-009");
    }
    // A lock, not a broken account: the first lasts a minute, then the password works.
    gateway.advance(61);
    let later = login_from(&gateway, right).await;
    assert_eq!(later.status, StatusCode::OK, "{}", later.body);
}

#[tokio::test]
async fn guesses_sent_at_once_from_one_address_lock_it_before_a_right_password_gets_through() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&behind_a_proxy(&upstream.url())).await;
    enroll(&gateway, "bob").await;
    // Spraying: one guess each on 29 accounts, all from one address.
    let guesses = (1..=29)
        .map(|i| attempt(&format!("user{i}"), WRONG, "198.51.100.7"))
        .collect();
    let right = attempt("bob", STRONG, "198.51.100.7");
    let (answer, guessed) = at_once_then(&gateway, guesses, right).await;
    assert_refused(&answer, StatusCode::UNAUTHORIZED, "WG-AUTH-009");
    for guess in &guessed {
        assert_refused(guess, StatusCode::UNAUTHORIZED, "WG-AUTH-009");
    }
    // Bob's account itself was never guessed at: from elsewhere his password works.
    let answer = login_from(&gateway, attempt("bob", STRONG, "203.0.113.2")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

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

/// A step-up opened by `user`'s session, which `end` (a path of the login API) then ends.
async fn step_up_then(gateway: &TestGateway, user: &str, secret: &str, end: &str) -> Value {
    let token = log_in(gateway, user, &next_code(secret)).await;
    let up = post_as(gateway, STEP_UP, &token, json!({})).await;
    assert_eq!(up.status, StatusCode::OK, "{}", up.body);
    let ended = post_as(gateway, end, &token, json!({})).await;
    assert_eq!(ended.body["ended"], 1, "{}", ended.body);
    // One time step later on the gateway's clock, so that the app shows a new code.
    gateway.advance(30);
    up.body["challenge"].clone()
}

async fn assert_no_sessions(gateway: &TestGateway, user: &str) {
    let path = format!("/admin/sessions?user={user}");
    let listed = admin(gateway, Method::GET, &path, "").await;
    assert_eq!(listed["sessions"], json!([]), "{listed}");
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
async fn a_step_up_opened_before_logout_everywhere_cannot_finish() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let (secret, _) = enroll(&gateway, "cara").await;
    let up = step_up_then(&gateway, "cara", &secret, "/.wardgate/api/logout-all").await;
    let code = code_at(&secret, 60);
    let refused = app_code(&gateway, &up, &code).await;
    assert_refused(&refused, StatusCode::UNAUTHORIZED, "WG-AUTH-010");
    // Dropped with the sessions, before its code was even checked: the code is unspent.
    log_in(&gateway, "cara", &code).await;
}

#[tokio::test]
async fn a_step_up_of_a_session_logged_out_meanwhile_cannot_finish() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let (secret, _) = enroll(&gateway, "dora").await;
    let up = step_up_then(&gateway, "dora", &secret, "/.wardgate/api/logout").await;
    let refused = app_code(&gateway, &up, &code_at(&secret, 60)).await;
    assert_refused(&refused, StatusCode::UNAUTHORIZED, "WG-AUTH-010");
    assert_no_sessions(&gateway, "dora").await;
}

#[tokio::test]
async fn a_password_reset_ends_the_login_waiting_for_its_second_factor() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let (secret, _) = enroll(&gateway, "emil").await;
    let waiting = challenge(&gateway, "emil").await;
    let path = "/admin/users/emil/reset-password";
    let reset = admin(&gateway, Method::POST, path, "").await;
    assert!(reset["enrollment"]["token"].is_string(), "{reset}");

    let refused = app_code(&gateway, &waiting, &next_code(&secret)).await;
    assert_refused(&refused, StatusCode::UNAUTHORIZED, "WG-AUTH-010");
    assert_no_sessions(&gateway, "emil").await;
}

#[tokio::test]
async fn a_users_newest_login_challenges_replace_the_oldest_and_others_keep_theirs() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let (fays, _) = enroll(&gateway, "fay").await;
    let (gils, _) = enroll(&gateway, "gil").await;
    let gils_challenge = challenge(&gateway, "gil").await;
    let mut challenges = Vec::new();
    for _ in 0..=wardgate::store::ephemeral::MAX_OPEN_PER_USER {
        challenges.push(challenge(&gateway, "fay").await);
    }

    let code = next_code(&fays);
    let refused = app_code(&gateway, &challenges[0], &code).await;
    assert_refused(&refused, StatusCode::UNAUTHORIZED, "WG-AUTH-010");
    let newest = app_code(&gateway, &challenges[challenges.len() - 1], &code).await;
    assert_eq!(newest.status, StatusCode::OK, "{}", newest.body);
    let other = app_code(&gateway, &gils_challenge, &next_code(&gils)).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
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

#[tokio::test]
async fn raised_hashing_parameters_rehash_a_password_at_its_next_login() {
    let upstream = MockUpstream::recording().await;
    let config = simple_config(&upstream.url());
    let gateway = TestGateway::start(&config).await;
    enroll(&gateway, "pia").await;
    let stored_hash = |dir: &std::path::Path| {
        let pia = open_store(dir).user_by_name("pia").unwrap();
        pia.password_hash.unwrap()
    };
    let dir = gateway.stop().await;
    let enrolled = stored_hash(dir.path());
    assert!(
        enrolled.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{enrolled}"
    );

    // The operator raises the iterations; pia's next password step stores a new hash.
    let raised = config + "auth:\n  password:\n    hashing: { iterations: 3 }\n";
    let gateway = TestGateway::start_in(dir, &raised).await;
    challenge(&gateway, "pia").await;
    let dir = gateway.stop().await;
    let rehashed = stored_hash(dir.path());
    assert!(
        rehashed.starts_with("$argon2id$v=19$m=19456,t=3,p=1$"),
        "{rehashed}"
    );

    // It is a hash of her password, under the current parameters: it verifies, and stays.
    let gateway = TestGateway::start_in(dir, &raised).await;
    challenge(&gateway, "pia").await;
    let dir = gateway.stop().await;
    assert_eq!(stored_hash(dir.path()), rehashed);
}

#[tokio::test]
async fn an_enrollment_past_its_password_ends_when_the_account_is_reset_or_disabled() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    for (name, action) in [("kim", "reset-mfa"), ("lou", "disable")] {
        let set = set_password(&gateway, &add_user(&gateway, name).await).await;
        assert_eq!(set.status, StatusCode::OK, "{}", set.body);
        let path = format!("/admin/users/{name}/{action}");
        admin(&gateway, Method::POST, &path, "").await;
        let secret = set.body["totp"]["secret"].as_str().unwrap();
        let confirm =
            json!({ "enrollment": set.body["enrollment"], "code": code_of_digits(secret, 6, 0) });
        let refused = post(&gateway, TOTP, confirm).await;
        assert_refused(&refused, StatusCode::BAD_REQUEST, "WG-AUTH-004");
    }
}

#[tokio::test]
async fn a_second_factor_works_once_at_login() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let (secret, codes) = enroll(&gateway, "mia").await;
    // The app's code: it opens one session, and a second login with it is refused.
    let code = next_code(&secret);
    log_in(&gateway, "mia", &code).await;
    let replayed = app_code(&gateway, &challenge(&gateway, "mia").await, &code).await;
    assert_refused(&replayed, StatusCode::UNAUTHORIZED, "WG-AUTH-011");
    // A recovery code likewise.
    let recovery = |challenge: Value| {
        let gateway = &gateway;
        let code = codes[0].clone();
        async move {
            post(
                gateway,
                "/.wardgate/api/login/recovery",
                json!({ "challenge": challenge, "code": code }),
            )
            .await
        }
    };
    let first = recovery(challenge(&gateway, "mia").await).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["recovery_codes_left"], 9);
    let again = recovery(challenge(&gateway, "mia").await).await;
    assert_refused(&again, StatusCode::UNAUTHORIZED, "WG-AUTH-011");
}

#[tokio::test]
async fn wrong_second_factors_lock_the_factor_until_its_back_off_ends() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let (secret, _) = enroll(&gateway, "noa").await;
    let right = next_code(&secret);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    let guessed = challenge(&gateway, "noa").await;
    for _ in 0..5 {
        let refused = app_code(&gateway, &guessed, wrong).await;
        assert_refused(&refused, StatusCode::UNAUTHORIZED, "WG-AUTH-011");
    }
    // The fifth wrong factor also ended that login: it is gone, not merely locked.
    let gone = app_code(&gateway, &guessed, wrong).await;
    assert_refused(&gone, StatusCode::UNAUTHORIZED, "WG-AUTH-010");
    // Locked: the right code on a new challenge is refused with the same answer.
    let locked = app_code(&gateway, &challenge(&gateway, "noa").await, &right).await;
    assert_refused(&locked, StatusCode::UNAUTHORIZED, "WG-AUTH-011");
    // After the first back-off (1 minute), the app's code of that moment logs in.
    gateway.advance(61);
    let later = code_at(&secret, 61 + 30);
    log_in(&gateway, "noa", &later).await;
}

#[tokio::test]
async fn a_login_waits_five_minutes_for_its_second_factor_and_no_longer() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let (secret, _) = enroll(&gateway, "ari").await;
    // The challenge's five minutes count from the second its request arrived; the password
    // hashing takes a while after that, so the wait below subtracts what has passed since, and
    // leaves ten seconds for the code's own trip on a loaded machine.
    let asked = unix_now();
    let started = post(
        &gateway,
        LOGIN,
        json!({ "user": "ari", "password": STRONG }),
    )
    .await;
    assert_eq!(started.body["expires_in"], 300, "{}", started.body);
    let wait = 290 - (unix_now() - asked);
    gateway.advance(wait);
    let in_time = app_code(
        &gateway,
        &started.body["challenge"],
        &code_at(&secret, wait),
    )
    .await;
    assert_eq!(in_time.status, StatusCode::OK, "{}", in_time.body);

    let late = challenge(&gateway, "ari").await;
    gateway.advance(301);
    let refused = app_code(&gateway, &late, &code_at(&secret, wait + 301)).await;
    assert_refused(&refused, StatusCode::UNAUTHORIZED, "WG-AUTH-010");
}
