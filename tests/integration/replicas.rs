//! Shared state (`shared_state: redis`, `store.kind: postgres`): the gateway against a private
//! Redis, and what it does when Redis stops answering: protected routes and `/readyz` refuse,
//! public routes go on, and everything comes back by itself; then two `wardgate` processes on
//! one Redis and one PostgreSQL, serving the same people as one gateway.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;

use crate::binary::Binary;
use crate::enrollment::{STRONG, post};
use crate::harness::*;
use crate::policy::{POLICY, ROUTES};
use crate::sessions::{LOGIN, call, code_at, config, enroll, post_as, totp_login};

#[path = "../servers/postgres.rs"]
mod private_postgres;
#[path = "../servers/redis.rs"]
mod private_redis;
use private_postgres::PrivatePostgres;
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
async fn readyz(gateway: &impl Listening) -> (StatusCode, String) {
    let response = plain_client()
        .request(get(&gateway.admin_url("/readyz")))
        .await
        .unwrap();
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
    let (status, _, _) = call(&gateway, "/public/x", None, &[]).await;
    assert_eq!(status, StatusCode::OK, "public routes go on");
    let (status, _, _) = call(&gateway, "/.wardgate/jwks.json", None, &[]).await;
    assert_eq!(status, StatusCode::OK, "upstreams still find the keys");
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

/// One replica: a `wardgate run` process in a directory of its own, with the admin token the
/// replicas share.
struct Replica {
    binary: Binary,
    token: String,
    dir: tempfile::TempDir,
}

impl Listening for Replica {
    fn https_port(&self) -> u16 {
        self.binary.https_port()
    }

    fn admin_addr(&self) -> std::net::SocketAddr {
        self.binary.admin_addr()
    }

    fn dir_path(&self) -> &std::path::Path {
        self.binary.dir_path()
    }

    fn admin_token(&self) -> String {
        self.token.clone()
    }
}

/// What the replicas share: a Redis, a PostgreSQL, and a directory with the master key (made
/// by the first replica) and PostgreSQL's password.
struct Shared {
    redis: PrivateRedis,
    postgres: PrivatePostgres,
    dir: tempfile::TempDir,
}

impl Shared {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("postgres.password");
        std::fs::write(&password, PrivatePostgres::PASSWORD).unwrap();
        let owner_only = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&password, owner_only).unwrap();
        Self {
            redis: PrivateRedis::start(),
            postgres: PrivatePostgres::start(),
            dir,
        }
    }

    /// `config` (a test config, embedded), its store in PostgreSQL and its state in Redis.
    fn config(&self, config: String) -> String {
        let shared = self.dir.path().display();
        let store = format!(
            "store:\n  dev_generate_key: true\n  key_file: \"{shared}/master.key\"\n  \
             kind: postgres\n  url: \"{}\"\n  password_file: \"{shared}/postgres.password\"\n",
            self.postgres.url_without_password()
        );
        let config = config.replace("store:\n  dev_generate_key: true\n", &store);
        assert!(config.contains("kind: postgres"), "{config}");
        format!(
            "{config}shared_state: {{ kind: redis, url: \"{}\", prefix: wg-two }}\n",
            self.redis.url()
        )
    }

    /// A replica started on `config` in a directory of its own, and the config for the
    /// commands that manage it (`cli.yaml`: with the admin listener's port).
    async fn replica(&self, config: &str) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let binary = Binary::start(dir.path(), config).await;
        let admin = format!("admin: \"{}\"", binary.admin_addr());
        let cli = config.replace("admin: \"127.0.0.1:0\"", &admin);
        std::fs::write(dir.path().join("cli.yaml"), cli).unwrap();
        let loaded = wardgate::config::load(&dir.path().join("cli.yaml")).unwrap();
        let token = wardgate::server::shared_admin_token(&loaded).await.unwrap();
        Replica {
            binary,
            token: token.expose().to_owned(),
            dir,
        }
    }
}

impl Shared {
    /// Two replicas on `config`.
    async fn two(&self, config: String) -> (Replica, Replica) {
        let config = self.config(config);
        // The first start makes the master key; the second finds it.
        let a = self.replica(&config).await;
        let b = self.replica(&config).await;
        (a, b)
    }
}

/// Both replicas refuse protected routes (and `/readyz`) while `store` does not answer.
async fn both_refuse(replicas: [&Replica; 2], token: &str, store: &str) {
    for replica in replicas {
        eventually("refused", async || {
            let (status, _, body) = call(replica, "/api/records/1", Some(token), &[]).await;
            status == StatusCode::SERVICE_UNAVAILABLE && body.contains("WG-STORE-001")
        })
        .await;
        eventually("not ready", async || {
            let (status, body) = readyz(replica).await;
            status == StatusCode::SERVICE_UNAVAILABLE && body.contains(store)
        })
        .await;
        let (status, _, _) = call(replica, "/public/x", None, &[]).await;
        assert_eq!(status, StatusCode::OK, "public routes go on");
    }
}

/// Both replicas serve `token` again, and are ready.
async fn both_serve(replicas: [&Replica; 2], token: &str) {
    for replica in replicas {
        eventually("served again", async || {
            call(replica, "/api/records/1", Some(token), &[]).await.0 == StatusCode::OK
        })
        .await;
        eventually("ready again", async || {
            readyz(replica).await.0 == StatusCode::OK
        })
        .await;
    }
}

#[tokio::test]
async fn two_replicas_on_one_redis_and_one_postgresql_serve_as_one_gateway() {
    let shared = Shared::start();
    let upstream = MockUpstream::recording().await;
    let scarce = "  - { path: /public/**, upstream: backend, auth: none }\n  \
        - { name: scarce, path: /scarce/**, upstream: backend, auth: none, \
        rate_limit: { per_client: { requests: 4, per: 1h } } }";
    let config = config(&upstream.url()).replace(
        "  - { path: /public/**, upstream: backend, auth: none }",
        scarce,
    );
    assert!(config.contains("scarce"));
    let (a, b) = shared.two(config).await;
    assert_eq!(a.token, b.token, "one admin token");

    // One budget: four requests split over A and B spend it, the fifth is refused on both.
    for replica in [&a, &b, &a, &b] {
        assert_eq!(
            call(replica, "/scarce/x", None, &[]).await.0,
            StatusCode::OK
        );
    }
    for replica in [&a, &b] {
        let (status, _, _) = call(replica, "/scarce/x", None, &[]).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    }

    // Enrolled through A, logged in on B, served by A.
    let (secret, _) = enroll(&a, "rita").await;
    // `wardgate user` finds the token in PostgreSQL, and B holds what A wrote.
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .args(["user", "list", "--config"])
        .arg(b.dir.path().join("cli.yaml"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success() && out.contains("rita"), "{out}");
    let token = totp_login(&b, "rita", &secret).await;
    for replica in [&a, &b] {
        let (status, _, body) = call(replica, "/api/records/1", Some(&token), &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // The assertion A signed verifies with the JWKS that B serves.
    let (_, _, jwks) = call(&b, "/.wardgate/jwks.json", None, &[]).await;
    let jwks: serde_json::Value = serde_json::from_str(&jwks).unwrap();
    let (_, _, jwks_a) = call(&a, "/.wardgate/jwks.json", None, &[]).await;
    assert_eq!(
        jwks,
        serde_json::from_str::<serde_json::Value>(&jwks_a).unwrap()
    );
    let records = upstream.seen().into_iter();
    let records: Vec<_> = records
        .filter(|seen| seen.uri.path().starts_with("/api/"))
        .collect();
    assert_eq!(records.len(), 2, "one served by each");
    for seen in records {
        let assertion = seen.headers["x-wardgate-assertion"].to_str().unwrap();
        let now = crate::sessions::unix_now();
        wardgate::assertion::verify(&jwks, assertion, "records", now).unwrap();
    }

    // The code B took is spent on A too; a login started on A finishes on B.
    let started = post(&a, LOGIN, json!({ "user": "rita", "password": STRONG })).await;
    let replayed = post(
        &a,
        "/.wardgate/api/login/totp",
        json!({ "challenge": started.body["challenge"], "code": code_at(&secret, 30) }),
    )
    .await;
    assert_eq!(
        replayed.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        replayed.body
    );
    let (sams, _) = enroll(&b, "sam").await;
    enroll(&b, "lena").await;
    let started = post(&a, LOGIN, json!({ "user": "sam", "password": STRONG })).await;
    let finished = post(
        &b,
        "/.wardgate/api/login/totp",
        json!({ "challenge": started.body["challenge"], "code": code_at(&sams, 30) }),
    )
    .await;
    assert_eq!(finished.status, StatusCode::OK, "{}", finished.body);
    let second = finished.body["token"].as_str().unwrap().to_owned();

    // A logout on B ends the session A has cached, well within a second.
    let out = post_as(&b, "/.wardgate/api/logout", &token, json!({})).await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.body);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, _, _) = call(&a, "/api/records/1", Some(&token), &[]).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "A still served a session B ended"
    );

    // Either store away: both refuse, even the session both have cached, and both come back
    // by themselves.
    both_serve([&a, &b], &second).await;
    shared.redis.stop();
    both_refuse([&a, &b], &second, "redis does not answer").await;
    shared.redis.start_again();
    both_serve([&a, &b], &second).await;
    shared.postgres.stop();
    both_refuse([&a, &b], &second, "postgresql does not answer").await;
    shared.postgres.start_again();
    both_serve([&a, &b], &second).await;

    // An operator's revocation on A ends the session B has cached.
    let listed = admin(&a, Method::GET, "/admin/sessions?user=sam", "").await;
    let id = listed["sessions"][0]["id"].as_str().unwrap().to_owned();
    admin(&a, Method::DELETE, &format!("/admin/sessions/{id}"), "").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, _, _) = call(&b, "/api/records/1", Some(&second), &[]).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "B still served a revoked session"
    );
    // One count of failures: five wrong passwords split over A and B lock the account (and
    // this address: last, then) on both; a locked account gets the same answer as a wrong
    // password, so the right one fails.
    for replica in [&a, &b, &a, &b, &a] {
        let wrong = post(
            replica,
            LOGIN,
            json!({ "user": "lena", "password": "not it" }),
        )
        .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
    }
    for replica in [&a, &b] {
        let locked = post(
            replica,
            LOGIN,
            json!({ "user": "lena", "password": STRONG }),
        )
        .await;
        assert_eq!(locked.status, StatusCode::UNAUTHORIZED, "{}", locked.body);
    }

    for replica in [a, b] {
        replica.binary.stop().await;
    }
}

const P1_LABS: &str = "/api/patients/p1/labs/latest";

/// Dana, a physician enrolled on A and put on p1's care team there, reads p1's labs on both
/// replicas: her token.
async fn dana_reads_p1_labs_on_both(a: &Replica, b: &Replica) -> String {
    let dana = crate::policy::person(a, "dana", &["physician"]).await;
    crate::policy::link(a, "dana", "p1").await;
    for replica in [a, b] {
        let (status, code, _) = crate::policy::get_as(replica, P1_LABS, &dana).await;
        assert_eq!(status, StatusCode::OK, "{code}");
    }
    dana
}

#[tokio::test]
async fn a_care_team_link_ended_on_one_replica_ends_access_on_the_other_at_once() {
    let shared = Shared::start();
    let upstream = MockUpstream::recording().await;
    let (a, b) = shared.two(crate::policy::config(&upstream.url())).await;
    let dana = dana_reads_p1_labs_on_both(&a, &b).await;
    admin(&b, Method::DELETE, "/admin/care-team/dana/p1", "").await;
    for replica in [&a, &b] {
        let (status, code, _) = crate::policy::get_as(replica, P1_LABS, &dana).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{code}");
    }
    for replica in [a, b] {
        replica.binary.stop().await;
    }
}

#[tokio::test]
async fn migrate_moves_a_one_replica_gateway_into_postgresql() {
    let shared = Shared::start();
    let upstream = MockUpstream::recording().await;
    let key_file = format!(
        "store:\n  dev_generate_key: true\n  key_file: \"{}/master.key\"\n",
        shared.dir.path().display()
    );
    let embedded = config(&upstream.url()).replace("store:\n  dev_generate_key: true\n", &key_file);
    let dir = tempfile::tempdir().unwrap();
    let alone = Binary::start(dir.path(), &embedded).await;
    let (secret, _) = enroll(&alone, "rita").await;
    let (_, _, jwks) = call(&alone, "/.wardgate/jwks.json", None, &[]).await;
    let token = alone.admin_token();
    alone.stop().await;

    // The same data directory and key, the store now named in PostgreSQL.
    let moved = shared.config(config(&upstream.url()));
    let file = dir.path().join("moved.yaml");
    std::fs::write(&file, &moved).unwrap();
    let migrate = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
            .args(["migrate", "--config"])
            .arg(&file)
            .output()
            .unwrap()
    };
    let first = migrate();
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        said.contains("copied 1 account(s), 1 TOTP seed(s)"),
        "{said}"
    );
    let again = migrate();
    assert!(!again.status.success());
    let refused = String::from_utf8_lossy(&again.stderr);
    assert!(refused.contains("empty database only"), "{refused}");

    // A replica that never saw the data directory serves rita, with the same keys.
    let replica = shared.replica(&moved).await;
    assert_eq!(replica.token, token, "operators keep their token");
    let (_, _, served) = call(&replica, "/.wardgate/jwks.json", None, &[]).await;
    assert_eq!(served, jwks, "upstreams keep their JWKS");
    let session = totp_login(&replica, "rita", &secret).await;
    let (status, _, _) = call(&replica, "/api/records/1", Some(&session), &[]).await;
    assert_eq!(status, StatusCode::OK);
    replica.binary.stop().await;
}

/// `wardgate audit ARGS…` on the config of the replica in `dir`.
fn audit_cli(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    wardgate(dir, &[&["audit"], args].concat())
}

/// The records `wardgate audit query ARGS… --format json` prints on the config in `dir`.
fn audit_query(dir: &std::path::Path, args: &[&str]) -> Vec<serde_json::Value> {
    let args = [&["query"], args, &["--format", "json"]].concat();
    let (ok, text) = audit_cli(dir, &args);
    assert!(ok, "{text}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn both_replicas_append_to_one_audit_trail_in_a_database_of_its_own() {
    let shared = Shared::start();
    // Its own server: stopping it leaves the accounts' database answering.
    let audit_db = PrivatePostgres::start();
    let upstream = MockUpstream::recording().await;
    let keys = shared.dir.path().display();
    let trail = format!(
        "audit:\n  key_file: \"{keys}/audit.key\"\n  signing_key: \"{keys}/audit-signing.key\"\n  \
         dev_generate_key: true\n  checkpoint_every: 3\n  \
         checkpoint_copies: [elsewhere/checkpoints.jsonl]\n  \
         postgres: {{ url: \"{}\", password_file: \"{keys}/postgres.password\" }}\n",
        audit_db.url_without_password()
    );
    let config = config_with(
        &format!("  ehr: {{ url: \"{}\" }}", upstream.url()),
        &format!("{ROUTES}\n  - {{ path: /public/**, upstream: ehr, auth: none }}"),
        &format!("{POLICY}{trail}"),
    );
    let (a, b) = shared.two(config).await;
    let dana = dana_reads_p1_labs_on_both(&a, &b).await;
    // One trail: either replica's config answers who saw p1, with both reads.
    for replica in [&a, &b] {
        let reads = audit_query(
            replica.dir.path(),
            &["--patient", "p1", "--kind", "decision"],
        );
        assert_eq!(reads.len(), 2, "{reads:?}");
        assert!(reads.iter().all(|r| r["decision"] == "allowed"));
    }
    let (ok, text) = audit_cli(b.dir.path(), &["verify"]);
    assert!(ok && text.starts_with("ok:"), "{text}");
    assert!(
        !a.dir.path().join("audit").exists(),
        "no segment files beside the replica"
    );

    // The audit database stops: patient data is refused on both, other routes go on.
    audit_db.stop();
    for replica in [&a, &b] {
        eventually("patient data refused", async || {
            let (status, code, _) = crate::policy::get_as(replica, P1_LABS, &dana).await;
            status == StatusCode::SERVICE_UNAVAILABLE && code == "WG-AUDIT-001"
        })
        .await;
        let (status, body) = readyz(replica).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("WG-AUDIT-001"), "{body}");
        let (status, _, _) = call(replica, "/public/x", None, &[]).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "no patient data, no wait for the trail"
        );
    }
    let forwarded = upstream.seen().len();
    audit_db.start_again();
    for replica in [&a, &b] {
        eventually("patient data served again", async || {
            crate::policy::get_as(replica, P1_LABS, &dana).await.0 == StatusCode::OK
        })
        .await;
        assert_eq!(readyz(replica).await.0, StatusCode::OK);
    }
    assert_eq!(
        upstream.seen().len(),
        forwarded + 2,
        "one read on each, after"
    );
    let dir = a.dir;
    for binary in [a.binary, b.binary] {
        binary.stop().await;
    }
    // Nothing was lost while the database was away: the refusals were recorded after.
    let refusals = audit_query(dir.path(), &[]);
    assert!(
        refusals.iter().any(|r| r["code"] == "WG-AUDIT-001"),
        "{refusals:?}"
    );
    let (ok, text) = audit_cli(dir.path(), &["verify"]);
    assert!(ok, "{text}");
    let copy = dir.path().join("elsewhere/checkpoints.jsonl");
    assert!(std::fs::read_to_string(copy).unwrap().lines().count() > 0);
}

/// `wardgate ARGS… --config` on the config of the replica in `dir`: success, and what it printed.
fn wardgate(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .args(args)
        .arg("--config")
        .arg(dir.join("cli.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::test]
async fn a_new_master_key_reseals_postgresql_once_every_replica_holds_it() {
    let shared = Shared::start();
    let upstream = MockUpstream::recording().await;
    let config = shared.config(config(&upstream.url()));
    let a = shared.replica(&config).await;
    let (secret, _) = enroll(&a, "rita").await;
    a.binary.stop().await;
    let (ok, text) = wardgate(a.dir.path(), &["keys", "rotate"]);
    assert!(ok && text.contains("wardgate keys reseal"), "{text}");
    // A replica started on the new file still opens what the older key sealed.
    let b = shared.replica(&config).await;
    let (ok, text) = wardgate(b.dir.path(), &["keys", "reseal"]);
    assert!(
        ok && text.contains("3 secret(s) in PostgreSQL re-sealed"),
        "the TOTP seed, the assertion key, the admin token: {text}"
    );
    let (ok, text) = wardgate(b.dir.path(), &["keys", "reseal"]);
    assert!(ok && text.contains("0 secret(s)"), "{text}");
    let token = totp_login(&b, "rita", &secret).await;
    let (status, _, body) = call(&b, "/api/records/1", Some(&token), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    b.binary.stop().await;
}
