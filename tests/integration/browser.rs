//! The gateway's own pages: enrollment, login and break-glass end to end in a real headless
//! Chromium (`tests/browser/*.mjs`, playwright-core), and with a plain HTTP client for what no
//! browser would send (forged posts) and for the headers of every page.
//!
//! `scripts/browser-deps.sh` installs Chromium, oathtool and playwright-core; without them the
//! browser test fails (it never skips). Screenshots land in
//! `$CARGO_TARGET_DIR/browser-artifacts/<test>/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{Method, Request, StatusCode, header};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::harness::*;

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";
const STRONG: &str = "Violet lanterns hum 7 quiet tunes!";
/// How long one browser script may take (a cold Chromium start included).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

/// A gateway that answers for `localhost` (WebAuthn needs a domain, not an address).
async fn gateway() -> (MockUpstream, TestGateway) {
    let upstream = MockUpstream::recording().await;
    let config = config_with(
        &format!("  backend: {{ url: \"{}\" }}", upstream.url()),
        "  - { path: /**, upstream: backend, auth: none }",
        "sanitize:\n  server_names: [localhost]\n",
    );
    (upstream, TestGateway::start(&config).await)
}

/// Where a test's screenshots go: beside the build, never in the source tree.
pub(crate) fn artifacts(test: &str) -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("wardgate-target"));
    base.join("browser-artifacts").join(test)
}

/// Runs `tests/browser/<script>` with `env`; returns the JSON line it printed last. A line
/// `{"advance_clock": N}` moves the gateway's clock N seconds forward and is answered `ok` on
/// the script's stdin.
pub(crate) async fn run_browser(
    gateway: &TestGateway,
    script: &str,
    env: &[(&str, &str)],
    artifacts: &Path,
) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fix = "run scripts/browser-deps.sh (it installs Chromium, oathtool and playwright-core)";
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "tests/browser/node_modules is missing: {fix}"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: {fix}"
    );
    let _ = std::fs::remove_dir_all(artifacts);
    let mut child = tokio::process::Command::new("node")
        .arg(root.join("tests/browser").join(script))
        .current_dir(root.join("tests/browser"))
        .envs(env.iter().copied())
        .env("ARTIFACTS", artifacts)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("node could not run ({error}): {fix}"));
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let talk = async {
        let mut printed = Vec::new();
        while let Some(line) = stdout.next_line().await.unwrap() {
            let asked = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v["advance_clock"].as_u64());
            match asked {
                Some(seconds) => {
                    gateway.advance(seconds);
                    stdin.write_all(b"ok\n").await.unwrap();
                }
                None => printed.push(line),
            }
        }
        (printed, child.wait().await.unwrap())
    };
    let (printed, status) = tokio::time::timeout(BROWSER_TIMEOUT, talk)
        .await
        .unwrap_or_else(|_| panic!("{script} ran longer than {BROWSER_TIMEOUT:?}"));
    let stderr = errors.await.unwrap();
    println!("screenshots: {}", artifacts.display());
    assert!(
        status.success(),
        "{script} failed ({status}):\n{stderr}\n{}",
        printed.join("\n")
    );
    let line = printed.last().map(String::as_str).unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|_| panic!("{script} printed no JSON: {printed:?}"))
}

#[tokio::test]
async fn a_new_user_enrolls_in_chromium() {
    let (upstream, gateway) = gateway().await;
    let token = add_user(&gateway, "alice").await;
    let dir = artifacts("a_new_user_enrolls_in_chromium");
    let url = gateway.url("");
    let seen = run_browser(
        &gateway,
        "enroll.mjs",
        &[("GATEWAY_URL", &url), ("ENROLL_TOKEN", &token)],
        &dir,
    )
    .await;

    assert_eq!(seen["form_status"], 200, "{seen}");
    assert_eq!(seen["csp"], CSP);
    assert_eq!(seen["user_name"], "alice");
    assert_eq!(seen["autocomplete"], "new-password");
    assert_eq!(seen["code_autocomplete"], "one-time-code");
    let cookie = &seen["csrf_cookie"];
    assert_eq!(
        (&cookie["httpOnly"], &cookie["secure"], &cookie["sameSite"]),
        (
            &Value::Bool(true),
            &Value::Bool(true),
            &Value::from("Strict")
        )
    );
    // A session cookie: playwright reports -1 for "no expiry".
    assert_eq!(cookie["expires"], -1);
    assert!(
        seen["rules"][0]
            .as_str()
            .unwrap()
            .starts_with("At least 12")
    );

    assert_eq!(seen["weak_status"], 400);
    assert_lists_all(
        &seen["weak_reasons"],
        &[
            "Use at least 12 characters.",
            "Add an upper-case letter.",
            "Add a digit, such as 7.",
            "Add a symbol, such as ! ? # or a space.",
            "Don't use your user name in your password.",
        ],
    );

    assert_eq!(seen["totp_status"], 200);
    let secret = seen["secret"].as_str().unwrap();
    let otpauth = seen["otpauth"].as_str().unwrap();
    assert!(
        otpauth.starts_with("otpauth://totp/Wardgate:alice?") && otpauth.contains(secret),
        "{otpauth}"
    );
    assert!(seen["qr_width"].as_u64().unwrap() > 100, "{seen}");
    assert_eq!(seen["done_status"], 200);
    let codes: std::collections::BTreeSet<&str> =
        strings(&seen["recovery_codes"]).into_iter().collect();
    assert_eq!(codes.len(), 10);
    assert!(codes.iter().all(|c| c.len() == 19), "{codes:?}");
    for shot in seen["screenshots"].as_array().unwrap() {
        assert!(Path::new(shot.as_str().unwrap()).is_file(), "{shot}");
    }

    // The enrollment really happened.
    assert_enrolled(&gateway, "alice").await;
    assert!(upstream.seen().is_empty());
}

/// A gateway for the login pages: `/api/**` and `/sensitive/**` (which wants a second factor
/// younger than 10 minutes) need a session. WebAuthn's relying party is `localhost` on the
/// gateway's own port, bound by the test first because the origin must name it.
pub(crate) async fn login_gateway() -> (MockUpstream, TestGateway) {
    let upstream = MockUpstream::recording().await;
    let https = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = https.local_addr().unwrap().port();
    let config = config_with(
        &format!("  backend: {{ url: \"{}\" }}", upstream.url()),
        "  - name: records\n    path: /api/**\n    upstream: backend\n    auth: session\n    identity: { headers: [name] }\n  - name: sensitive\n    path: /sensitive/**\n    upstream: backend\n    auth: session\n    reauth_within: 10m",
        &format!(
            "sanitize:\n  server_names: [localhost]\nauth:\n  webauthn: {{ rp_id: localhost, origin: \"https://localhost:{port}\" }}\n"
        ),
    );
    (upstream, TestGateway::start_on(https, &config).await)
}

/// The user every request reached the upstream as, and whether a session token went along.
fn upstream_saw(upstream: &MockUpstream) -> Vec<(String, String, bool)> {
    upstream
        .seen()
        .iter()
        .map(|seen| {
            let user = seen
                .headers
                .get("x-wardgate-user")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let token = seen
                .headers
                .get_all(header::COOKIE)
                .iter()
                .any(|v| v.to_str().unwrap().contains("__Host-wardgate-session"));
            (seen.uri.to_string(), user, token)
        })
        .collect()
}

#[tokio::test]
async fn totp_login_in_chromium_returns_to_the_page_until_the_absolute_cap_and_steps_up() {
    let (upstream, gateway) = login_gateway().await;
    let (secret, _) = crate::sessions::enroll(&gateway, "dora").await;
    let dir = artifacts("totp_login_in_chromium");
    let url = gateway.url("");
    let seen = run_browser(
        &gateway,
        "login.mjs",
        &[
            ("GATEWAY_URL", &url),
            ("USER_NAME", "dora"),
            ("PASSWORD", STRONG),
            ("TOTP_SECRET", &secret),
            ("IDLE_TIMEOUT", "900"),
            ("ABSOLUTE_TIMEOUT", "3600"),
            ("REAUTH_WITHIN", "600"),
        ],
        &dir,
    )
    .await;

    // 1. To login with the original target, and back to it.
    let target = gateway.url("/api/records/7?view=full");
    let login = |reason: &str| {
        gateway.url(&format!(
            "/.wardgate/login?return_to=/api/records/7%3Fview%3Dfull&reason={reason}"
        ))
    };
    assert_eq!(seen["login_url"], login("login"), "{seen}");
    assert_eq!(seen["login_notices"], 0);
    let wrong = &seen["wrong_password"];
    assert_eq!(wrong["status"], 401);
    assert_eq!(
        wrong["error"],
        "the user name or password is wrong, or the account cannot log in now"
    );
    assert_eq!(wrong["user_kept"], "dora");
    let factor = &seen["factor_page"];
    assert_eq!(
        (
            &factor["status"],
            &factor["totp"],
            &factor["webauthn"],
            &factor["recovery"]
        ),
        (
            &Value::from(200),
            &Value::from(1),
            &Value::from(0),
            &Value::from(1)
        )
    );
    assert_eq!(seen["wrong_code"]["status"], 401);
    assert_eq!(
        seen["wrong_code"]["error"],
        "the second factor was not accepted"
    );
    let after = &seen["after_login"];
    assert_eq!(after["url"], target);
    assert_eq!(after["status"], 200);
    assert_eq!(after["body"], "recorded");
    let cookie = &seen["session_cookie"];
    assert_eq!(cookie["httpOnly"], true);
    assert_eq!(cookie["secure"], true);
    assert_eq!(cookie["sameSite"], "Strict");
    assert_eq!(cookie["path"], "/");
    // No Expires / Max-Age: playwright reports -1, the cookie dies with the browser.
    assert_eq!(cookie["expires"], -1);

    // 2. Active every 800 s, still ended at the absolute cap (1 h), then back to the same page.
    let steps = seen["active_steps"].as_array().unwrap();
    assert_eq!(steps.len(), 4, "{seen}");
    for step in steps {
        assert_eq!(
            (&step["url"], &step["status"]),
            (&Value::from(target.clone()), &Value::from(200))
        );
    }
    assert_eq!(seen["capped"]["url"], login("absolute"));
    assert_eq!(
        seen["capped"]["notice"],
        "the session reached its maximum length: log in again"
    );
    assert_eq!(seen["after_relogin"]["url"], target);
    assert_eq!(seen["after_relogin"]["status"], 200);

    // 3. Step-up: the second factor only, a new cookie, back to the sensitive route.
    let step_up = &seen["step_up"];
    assert_eq!(
        step_up["url"],
        gateway.url("/.wardgate/login?return_to=/sensitive/1&reason=step-up")
    );
    assert_eq!(
        step_up["notice"],
        "confirm it is you with your second factor to continue"
    );
    assert_eq!(
        (&step_up["password_fields"], &step_up["totp"]),
        (&Value::from(0), &Value::from(1))
    );
    let stepped = &seen["after_step_up"];
    assert_eq!(stepped["url"], gateway.url("/sensitive/1"));
    assert_eq!(stepped["status"], 200);
    assert_eq!(stepped["rotated"], true);

    // 4. Logout.
    assert_eq!(seen["home_user"], "dora");
    let out = &seen["after_logout"];
    assert_eq!(out["url"], gateway.url("/.wardgate/login?reason=logout"));
    assert_eq!(out["notice"], "you have logged out");
    assert_eq!(out["cookie"], "gone");
    assert_eq!(seen["after_logout_target"], login("login"));

    // The upstream saw only authenticated requests, as dora, never with the session cookie.
    let saw = upstream_saw(&upstream);
    assert_eq!(saw.len(), 7, "{saw:?}");
    assert!(saw.iter().all(|(_, _, token)| !token), "{saw:?}");
    assert!(
        saw.iter()
            .filter(|(uri, ..)| uri.starts_with("/api/"))
            .all(|(_, user, _)| user == "dora"),
        "{saw:?}"
    );
    for shot in seen["screenshots"].as_array().unwrap() {
        assert!(Path::new(shot.as_str().unwrap()).is_file(), "{shot}");
    }
}

#[tokio::test]
async fn a_passkey_is_enrolled_and_used_to_log_in_in_chromium() {
    let (upstream, gateway) = login_gateway().await;
    let token = add_user(&gateway, "erin").await;
    let dir = artifacts("passkey_in_chromium");
    let url = gateway.url("");
    let seen = run_browser(
        &gateway,
        "passkey.mjs",
        &[
            ("GATEWAY_URL", &url),
            ("ENROLL_TOKEN", &token),
            ("USER_NAME", "erin"),
            ("PASSWORD", STRONG),
        ],
        &dir,
    )
    .await;

    assert_eq!(seen["enrolled"]["status"], 200, "{seen}");
    assert_eq!(seen["enrolled"]["recovery_codes"], 10);
    let credentials = seen["credentials"].as_array().unwrap();
    assert_eq!(credentials.len(), 1, "{seen}");
    assert_eq!(credentials[0]["rp"], "localhost");
    assert_eq!(
        seen["login_url"],
        gateway.url("/.wardgate/login?return_to=/api/records/9&reason=login")
    );
    assert_eq!(seen["factor_page"]["webauthn"], 1);
    assert_eq!(seen["factor_page"]["totp"], 0);
    assert_eq!(seen["tampered"]["status"], 401, "{seen}");
    assert_eq!(
        seen["tampered"]["error"],
        "the second factor was not accepted"
    );
    let after = &seen["after_login"];
    assert_eq!(after["url"], gateway.url("/api/records/9"), "{seen}");
    assert_eq!(after["status"], 200);
    assert_eq!(after["body"], "recorded");

    // The second authenticator, added from the home page, logs in on its own.
    assert_eq!(seen["added"]["status"], 200, "{seen}");
    assert_eq!(
        seen["added"]["notice"],
        "passkey added: you now have 2 passkeys or security keys"
    );
    assert_eq!(
        seen["with_security_key"]["url"],
        gateway.url("/api/records/9")
    );
    assert_eq!(seen["with_security_key"]["status"], 200);

    let shown = admin(&gateway, Method::GET, "/admin/users/erin", "").await;
    let mfa = &shown["user"]["mfa"];
    assert_eq!(mfa["webauthn_credentials"], 2, "{shown}");
    assert_eq!(mfa["totp"], false, "{shown}");
    assert_eq!(mfa["enrollment_required"], false, "{shown}");
    let expected = ("/api/records/9".to_owned(), "erin".to_owned(), false);
    assert_eq!(upstream_saw(&upstream), vec![expected.clone(), expected]);

    // An authenticator counts every signature it makes, a refused one too: the passkey signed
    // the tampered answer and then the genuine one. The security key signed its login, and
    // what else it counted (Chromium may probe it silently first: the login allowed two
    // credentials) only moves its counter further.
    let counter = |list: &Value| {
        assert_eq!(list.as_array().unwrap().len(), 1, "{seen}");
        (
            list[0]["id"].as_str().unwrap().to_owned(),
            list[0]["sign_count"].as_u64().unwrap(),
        )
    };
    let (passkey, registered) = counter(&seen["credentials"]);
    let (passkey_again, passkey_used) = counter(&seen["passkey_after_login"]);
    let (security_key, key_registered) = counter(&seen["security_key_registered"]);
    let (security_key_again, key_used) = counter(&seen["security_key_after_login"]);
    assert_eq!(
        (passkey_again, security_key_again),
        (passkey.clone(), security_key.clone())
    );
    assert_eq!(passkey_used, registered + 2, "{seen}");
    assert!(key_used > key_registered, "{seen}");
    // The store holds the counter of each credential's last accepted signature: a clone that
    // replays an older one is refused.
    let dir = gateway.stop().await;
    let store = open_store(dir.path());
    let erin = store.user_by_name("erin").unwrap();
    let stored: std::collections::BTreeMap<String, u64> = store
        .webauthn_credentials(erin.id)
        .unwrap()
        .iter()
        .map(|c| (BASE64.encode(&c.credential_id), u64::from(c.sign_count)))
        .collect();
    assert_eq!(
        stored,
        [(passkey, passkey_used), (security_key, key_used)].into()
    );
}

/// `name` enrolled (password and authenticator app) with `roles`: the app's secret.
async fn enrolled_with(gateway: &TestGateway, name: &str, roles: &[&str]) -> String {
    let (secret, _) = crate::sessions::enroll(gateway, name).await;
    let body = serde_json::json!({ "roles": roles }).to_string();
    let path = format!("/admin/users/{name}/roles");
    admin(gateway, Method::PUT, &path, &body).await;
    secret
}

#[tokio::test]
async fn break_glass_in_chromium_steps_up_opens_at_once_alerts_is_reviewed_and_ends() {
    let upstream = MockUpstream::recording().await;
    let alerts = MockUpstream::recording().await;
    let config = crate::policy::alerting(&upstream, &alerts).replace(
        "duration: 30m, reauth_within: 5m",
        "duration: 10m, reauth_within: 5m",
    );
    assert!(config.contains("duration: 10m"), "{config}");
    let gateway = TestGateway::start(&config).await;
    let physician = enrolled_with(&gateway, "paul", &["physician"]).await;
    let officer = enrolled_with(&gateway, "pia", &["privacy-officer"]).await;
    let dir = artifacts("break_glass_in_chromium");
    let url = gateway.url("");
    let seen = run_browser(
        &gateway,
        "breakglass.mjs",
        &[
            ("GATEWAY_URL", &url),
            ("PASSWORD", STRONG),
            ("PHYSICIAN", "paul"),
            ("PHYSICIAN_SECRET", &physician),
            ("OFFICER", "pia"),
            ("OFFICER_SECRET", &officer),
            ("PATIENT", "p7"),
            ("REAUTH_WITHIN", "300"),
            ("DURATION", "600"),
        ],
        &dir,
    )
    .await;

    // 1. Refused, with the request page pre-filled; the home page links to what a physician may.
    assert_eq!(
        seen["home_links"],
        serde_json::json!(["link-request", "link-mine", "link-break-glass"]),
        "{seen}"
    );
    let before = &seen["before"];
    assert_eq!(
        (&before["status"], &before["code"]),
        (&Value::from(403), &Value::from("WG-POLICY-001"))
    );
    assert_eq!(
        before["ask"],
        "/.wardgate/access/request?patient=p7&category=labs"
    );

    // 2. Through the step-up (the second factor only) and back to the form; open at once.
    let step_up = &seen["step_up"];
    assert_eq!(
        step_up["url"],
        gateway.url("/.wardgate/login?return_to=/.wardgate/access/break-glass&reason=step-up")
    );
    assert_eq!(
        step_up["notice"],
        "confirm it is you with your second factor to continue"
    );
    assert_eq!(step_up["password_fields"], 0);
    let form = &seen["form"];
    assert_eq!(form["url"], gateway.url("/.wardgate/access/break-glass"));
    assert_eq!(form["status"], 200);
    assert_eq!(
        form["reasons"],
        serde_json::json!(["", "unconscious", "life-threat"])
    );
    let opened = &seen["opened"];
    assert_eq!(
        (&opened["status"], &opened["emergency"]),
        (&Value::from("active"), &Value::from("unconscious"))
    );
    assert!(opened["ends"].as_str().unwrap().ends_with(" GMT"), "{seen}");
    assert_eq!(seen["during"]["status"], 200, "{seen}");
    assert_eq!(seen["during"]["body"], "recorded");

    // The alert went out, to the mock webhook.
    let summary = crate::policy::the_alert(&alerts).await;
    assert_eq!(
        (
            &summary["event"],
            &summary["user"],
            &summary["patient"],
            &summary["reason_code"],
            &summary["reason"]
        ),
        (
            &Value::from("break_glass_opened"),
            &Value::from("paul"),
            &Value::from("p7"),
            &Value::from("unconscious"),
            &Value::from("found unresponsive in the waiting room")
        )
    );

    // 3. The privacy officer's queue held it, and holds nothing once reviewed.
    let queue = &seen["queue"];
    assert_eq!(queue["entries"], 1, "{seen}");
    assert_eq!(
        (&queue["requester"], &queue["patient"], &queue["emergency"]),
        (
            &Value::from("paul"),
            &Value::from("p7"),
            &Value::from("unconscious")
        )
    );
    assert_eq!(seen["after_review"]["entries"], 0, "{seen}");
    let grants = admin(&gateway, Method::GET, "/admin/grants", "").await;
    let review = &grants["requests"][0]["emergency"]["review"];
    assert_eq!(review["outcome"], "appropriate", "{grants}");
    assert_eq!(review["comment"], "checked the chart: justified");

    // 4. Over after its duration.
    assert_eq!(
        (&seen["after"]["status"], &seen["after"]["code"]),
        (&Value::from(403), &Value::from("WG-POLICY-001")),
        "{seen}"
    );
    let reached: Vec<String> = upstream.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(reached, ["/api/patients/p7/labs/1"], "only while open");
    for shot in seen["screenshots"].as_array().unwrap() {
        assert!(Path::new(shot.as_str().unwrap()).is_file(), "{shot}");
    }
}

/// A page as a plain client sees it.
pub(crate) struct Page {
    pub(crate) status: StatusCode,
    pub(crate) headers: http::HeaderMap,
    pub(crate) html: String,
}

pub(crate) async fn fetch(gateway: &TestGateway, request: Request<TestBody>) -> Page {
    let response = gateway.client(false).request(request).await.unwrap();
    Page {
        status: response.status(),
        headers: response.headers().clone(),
        html: body_text(response).await,
    }
}

/// The `value` of the hidden input named `name`.
pub(crate) fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name}: {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

pub(crate) fn assert_page_headers(page: &Page) {
    assert_eq!(
        page.headers[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(page.headers[header::CONTENT_SECURITY_POLICY], CSP);
    assert_eq!(page.headers["x-frame-options"], "DENY");
}

pub(crate) fn assert_refusal_page(page: &Page, status: StatusCode, code: &str) {
    assert_eq!(page.status, status, "{}", page.html);
    assert_page_headers(page);
    assert!(
        page.html
            .contains(&format!(r#"<span id="refusal-code">{code}</span>"#)),
        "{}",
        page.html
    );
}

/// The enrollment password form: its CSRF cookie (`name=value`) and hidden field.
async fn password_form(gateway: &TestGateway, token: &str) -> (Page, String, String) {
    form_page(gateway, &format!("/.wardgate/enroll?token={token}")).await
}

/// A page with a form, fetched without cookies: its CSRF cookie (`name=value`) and hidden field.
async fn form_page(gateway: &TestGateway, path_and_query: &str) -> (Page, String, String) {
    let page = fetch(gateway, get(&gateway.url(path_and_query))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let set_cookie = page.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let csrf = hidden(&page.html, "csrf");
    (page, cookie, csrf)
}

pub(crate) fn form_post(
    gateway: &TestGateway,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Request<TestBody> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(gateway.url(path))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(full(body)).unwrap()
}

pub(crate) fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn pages_carry_the_csp_no_store_and_a_host_cookie() {
    let (upstream, gateway) = gateway().await;
    let token = add_user(&gateway, "carol").await;
    let (page, _, csrf) = password_form(&gateway, &token).await;
    assert_page_headers(&page);
    let set_cookie = page.headers[header::SET_COOKIE].to_str().unwrap();
    assert_eq!(
        set_cookie,
        format!("__Host-wardgate-csrf={csrf}; Secure; HttpOnly; SameSite=Strict; Path=/")
    );
    assert_eq!(csrf.len(), 43);
    for input in [
        r#"autocomplete="username""#,
        r#"autocomplete="new-password""#,
        r#"<label for="password">"#,
        r#"<meta name="viewport""#,
    ] {
        assert!(page.html.contains(input), "{input}: {}", page.html);
    }

    let style = fetch(&gateway, get(&gateway.url("/.wardgate/assets/style.css"))).await;
    assert_eq!(style.status, StatusCode::OK);
    assert_eq!(
        style.headers[header::CONTENT_TYPE],
        "text/css; charset=utf-8"
    );
    assert_eq!(style.headers[header::CACHE_CONTROL], "no-store");

    // Refusals on pages are pages: the same status and code as the JSON ones.
    for (path, status, code) in [
        (
            "/.wardgate/enroll?token=00".to_owned(),
            StatusCode::BAD_REQUEST,
            "WG-AUTH-001",
        ),
        (
            "/.wardgate/enroll".to_owned(),
            StatusCode::BAD_REQUEST,
            "WG-AUTH-001",
        ),
        (
            format!("/.wardgate/enroll?token={token}&token={token}"),
            StatusCode::BAD_REQUEST,
            "WG-AUTH-001",
        ),
        (
            "/.wardgate/nowhere".to_owned(),
            StatusCode::NOT_FOUND,
            "WG-AUTH-006",
        ),
        (
            "/.wardgate".to_owned(),
            StatusCode::NOT_FOUND,
            "WG-AUTH-006",
        ),
        (
            "/.wardgate/enroll/totp".to_owned(),
            StatusCode::METHOD_NOT_ALLOWED,
            "WG-METHOD-001",
        ),
    ] {
        let page = fetch(&gateway, get(&gateway.url(&path))).await;
        assert_refusal_page(&page, status, code);
    }
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn forged_form_posts_are_refused_and_change_nothing() {
    let (upstream, gateway) = gateway().await;
    let token = add_user(&gateway, "dave").await;
    let (_, cookie, csrf) = password_form(&gateway, &token).await;
    let origin = format!("https://localhost:{}", gateway.https.port());
    let body = |csrf: &str| {
        format!(
            "csrf={}&token={}&password={}",
            encode(csrf),
            encode(&token),
            encode(STRONG)
        )
    };
    let other = "A".repeat(43);
    type Forgery<'a> = (&'a str, Vec<(&'a str, &'a str)>, String);
    let forged: [Forgery; 7] = [
        ("no cookie", vec![], body(&csrf)),
        ("no field", vec![("cookie", &cookie)], {
            format!("token={}&password={}", encode(&token), encode(STRONG))
        }),
        ("mismatched field", vec![("cookie", &cookie)], body(&other)),
        (
            "cross-site Origin",
            vec![("cookie", &cookie), ("origin", "https://evil.example")],
            body(&csrf),
        ),
        (
            "Origin on another port",
            vec![("cookie", &cookie), ("origin", "https://localhost:1")],
            body(&csrf),
        ),
        (
            "Sec-Fetch-Site: cross-site",
            vec![("cookie", &cookie), ("sec-fetch-site", "cross-site")],
            body(&csrf),
        ),
        (
            "Sec-Fetch-Site: same-site",
            vec![
                ("cookie", &cookie),
                ("sec-fetch-site", "same-site"),
                ("origin", &origin),
            ],
            body(&csrf),
        ),
    ];
    for (case, headers, body) in forged {
        let page = fetch(
            &gateway,
            form_post(&gateway, "/.wardgate/enroll", &headers, body),
        )
        .await;
        assert_refusal_page(&page, StatusCode::FORBIDDEN, "WG-AUTH-020");
        assert!(
            page.html.contains("the form could not be verified"),
            "{case}"
        );
    }
    let shown = admin(&gateway, Method::GET, "/admin/users/dave", "").await;
    assert_eq!(shown["user"]["password_set"], false, "{shown}");

    // Malformed forms: not a form, a field twice, a field too many, a bad escape.
    let with_cookie = [("cookie", cookie.as_str())];
    for (body, content_type, status, code) in [
        (
            body(&csrf),
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "WG-BODY-002",
        ),
        (
            format!("{}&csrf={}", body(&csrf), encode(&csrf)),
            "application/x-www-form-urlencoded",
            StatusCode::BAD_REQUEST,
            "WG-BODY-005",
        ),
        (
            format!("{}&admin=1", body(&csrf)),
            "application/x-www-form-urlencoded",
            StatusCode::BAD_REQUEST,
            "WG-BODY-005",
        ),
        (
            format!("{}&x=%zz", body(&csrf)),
            "application/x-www-form-urlencoded",
            StatusCode::BAD_REQUEST,
            "WG-BODY-005",
        ),
        (
            format!("{}&x={}", body(&csrf), "y".repeat(17 * 1024)),
            "application/x-www-form-urlencoded",
            StatusCode::PAYLOAD_TOO_LARGE,
            "WG-BODY-001",
        ),
    ] {
        let mut request = form_post(&gateway, "/.wardgate/enroll", &with_cookie, body);
        request
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        let page = fetch(&gateway, request).await;
        assert_refusal_page(&page, status, code);
    }
    let shown = admin(&gateway, Method::GET, "/admin/users/dave", "").await;
    assert_eq!(shown["user"]["password_set"], false, "{shown}");

    // The same post from the gateway's own page goes through.
    let page = fetch(
        &gateway,
        form_post(
            &gateway,
            "/.wardgate/enroll",
            &[
                ("cookie", &cookie),
                ("origin", &origin),
                ("sec-fetch-site", "same-origin"),
            ],
            body(&csrf),
        ),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert_page_headers(&page);
    assert!(page.html.contains(r#"id="totp-secret""#), "{}", page.html);
    // No new cookie: the one the form was served with stays.
    assert!(page.headers.get(header::SET_COOKIE).is_none());

    // A forged code post is refused before the code is looked at.
    let enrollment = hidden(&page.html, "enrollment");
    let page = fetch(
        &gateway,
        form_post(
            &gateway,
            "/.wardgate/enroll/totp",
            &[("cookie", &cookie), ("sec-fetch-site", "cross-site")],
            format!("csrf={}&enrollment={enrollment}&code=123456", encode(&csrf)),
        ),
    )
    .await;
    assert_refusal_page(&page, StatusCode::FORBIDDEN, "WG-AUTH-020");
    let shown = admin(&gateway, Method::GET, "/admin/users/dave", "").await;
    assert_eq!(shown["user"]["password_set"], true);
    assert_eq!(shown["user"]["mfa"]["totp"], false);
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn a_wrong_code_shows_the_authenticator_page_again() {
    let (_upstream, gateway) = gateway().await;
    let token = add_user(&gateway, "erin").await;
    let (_, cookie, csrf) = password_form(&gateway, &token).await;
    let headers = [("cookie", cookie.as_str())];
    let page = fetch(
        &gateway,
        form_post(
            &gateway,
            "/.wardgate/enroll",
            &headers,
            format!(
                "csrf={}&token={}&password={}",
                encode(&csrf),
                encode(&token),
                encode(STRONG)
            ),
        ),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let enrollment = hidden(&page.html, "enrollment");
    let secret_marker = r#"<code id="totp-secret">"#;
    let secret = |html: &str| {
        let start = html.find(secret_marker).unwrap() + secret_marker.len();
        html[start..].split('<').next().unwrap().to_owned()
    };
    let first_secret = secret(&page.html);

    let page = fetch(
        &gateway,
        form_post(
            &gateway,
            "/.wardgate/enroll/totp",
            &headers,
            format!(
                "csrf={}&enrollment={enrollment}&code=not-a-code",
                encode(&csrf)
            ),
        ),
    )
    .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert_page_headers(&page);
    assert!(page.html.contains(r#"id="totp-error""#), "{}", page.html);
    assert_eq!(secret(&page.html), first_secret);
    assert_eq!(hidden(&page.html, "enrollment"), enrollment);
}

/// Posts a login-page form with the CSRF cookie and field and a same-origin `Origin`.
pub(crate) async fn post_page(
    gateway: &TestGateway,
    path: &str,
    cookies: &str,
    csrf: &str,
    fields: &[(&str, &str)],
) -> Page {
    let origin = format!("https://localhost:{}", gateway.https.port());
    let mut body = format!("csrf={}", encode(csrf));
    for (name, value) in fields {
        body.push_str(&format!("&{name}={}", encode(value)));
    }
    let headers = [("cookie", cookies), ("origin", origin.as_str())];
    fetch(gateway, form_post(gateway, path, &headers, body)).await
}

#[tokio::test]
async fn login_pages_refuse_bad_input_with_fixed_pages() {
    let (upstream, gateway) = login_gateway().await;
    let (secret, _) = crate::sessions::enroll(&gateway, "finn").await;
    let (form, cookie, csrf) =
        form_page(&gateway, "/.wardgate/login?return_to=//evil.example/x").await;
    assert_page_headers(&form);
    // An unsafe target is never put into the form.
    assert_eq!(hidden(&form.html, "return_to"), "");
    for input in [
        r#"autocomplete="username""#,
        r#"autocomplete="current-password""#,
        r#"<label for="user">"#,
        r#"<label for="password">"#,
    ] {
        assert!(form.html.contains(input), "{input}: {}", form.html);
    }

    // No CSRF cookie, a field too many, an unknown challenge, a method, a logout without session.
    let forged = fetch(
        &gateway,
        form_post(
            &gateway,
            "/.wardgate/login",
            &[],
            format!(
                "csrf={}&user=finn&password={}&return_to=",
                encode(&csrf),
                encode(STRONG)
            ),
        ),
    )
    .await;
    assert_refusal_page(&forged, StatusCode::FORBIDDEN, "WG-AUTH-020");
    let extra = [
        ("user", "finn"),
        ("password", STRONG),
        ("return_to", ""),
        ("admin", "1"),
    ];
    let page = post_page(&gateway, "/.wardgate/login", &cookie, &csrf, &extra).await;
    assert_refusal_page(&page, StatusCode::BAD_REQUEST, "WG-BODY-005");
    let nobody = "0".repeat(64);
    let unknown = [
        ("challenge", nobody.as_str()),
        ("return_to", ""),
        ("code", "123456"),
    ];
    let page = post_page(&gateway, "/.wardgate/login/totp", &cookie, &csrf, &unknown).await;
    assert_refusal_page(&page, StatusCode::UNAUTHORIZED, "WG-AUTH-010");
    let page = fetch(&gateway, get(&gateway.url("/.wardgate/login/totp"))).await;
    assert_refusal_page(&page, StatusCode::METHOD_NOT_ALLOWED, "WG-METHOD-001");
    let page = post_page(
        &gateway,
        "/.wardgate/logout",
        &cookie,
        &csrf,
        &[("scope", "this")],
    )
    .await;
    assert_refusal_page(&page, StatusCode::UNAUTHORIZED, "WG-SESSION-001");
    let home = fetch(&gateway, get(&gateway.url("/.wardgate/"))).await;
    assert_eq!(home.status, StatusCode::SEE_OTHER);
    assert_eq!(home.headers[header::LOCATION], "/.wardgate/login");

    // The password step, then a forged `return_to` after the second factor: home, not evil.
    let fields = [
        ("user", "finn"),
        ("password", STRONG),
        ("return_to", "//evil.example/x"),
    ];
    let factor = post_page(&gateway, "/.wardgate/login", &cookie, &csrf, &fields).await;
    assert_eq!(factor.status, StatusCode::OK, "{}", factor.html);
    assert_page_headers(&factor);
    let challenge = hidden(&factor.html, "challenge");
    assert!(
        !factor.html.contains("webauthn.js"),
        "no passkey, no script"
    );
    let code = crate::sessions::next_code(&secret);
    let fields = [
        ("challenge", challenge.as_str()),
        ("return_to", "//evil.example/x"),
        ("code", code.as_str()),
    ];
    let done = post_page(&gateway, "/.wardgate/login/totp", &cookie, &csrf, &fields).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.html);
    assert_eq!(done.headers[header::LOCATION], "/.wardgate/");
    let session = done.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        session.starts_with("__Host-wardgate-session=wgs_"),
        "{session}"
    );
    assert!(done.headers.contains_key("wardgate-session-expires-in"));

    // Logout with a scope that is neither `this` nor `everywhere`.
    let both = format!("{cookie}; {}", session.split(';').next().unwrap());
    let page = post_page(
        &gateway,
        "/.wardgate/logout",
        &both,
        &csrf,
        &[("scope", "all")],
    )
    .await;
    assert_refusal_page(&page, StatusCode::BAD_REQUEST, "WG-BODY-005");
    assert!(upstream.seen().is_empty());
}

/// A login through the pages by a browser with no cookies yet: the password form, then the
/// app's `code` on the second-factor page. Returns the answer to the code.
async fn page_login(gateway: &TestGateway, user: &str, code: &str) -> Page {
    let (_, cookie, csrf) = form_page(gateway, "/.wardgate/login?return_to=/api/records/1").await;
    let fields = [
        ("user", user),
        ("password", STRONG),
        ("return_to", "/api/records/1"),
    ];
    let factor = post_page(gateway, "/.wardgate/login", &cookie, &csrf, &fields).await;
    assert_eq!(factor.status, StatusCode::OK, "{}", factor.html);
    let challenge = hidden(&factor.html, "challenge");
    let fields = [
        ("challenge", challenge.as_str()),
        ("return_to", "/api/records/1"),
        ("code", code),
    ];
    post_page(gateway, "/.wardgate/login/totp", &cookie, &csrf, &fields).await
}

#[tokio::test]
async fn an_app_code_logs_in_once_on_the_login_pages() {
    let (upstream, gateway) = login_gateway().await;
    let (secret, _) = crate::sessions::enroll(&gateway, "gail").await;
    let code = crate::sessions::next_code(&secret);
    let first = page_login(&gateway, "gail", &code).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.html);
    assert_eq!(first.headers[header::LOCATION], "/api/records/1");
    let session = first.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        session.starts_with("__Host-wardgate-session=wgs_"),
        "{session}"
    );

    // Another browser, the same code in the same time step: refused, and no session.
    let replayed = page_login(&gateway, "gail", &code).await;
    assert_eq!(
        replayed.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        replayed.html
    );
    assert_page_headers(&replayed);
    assert!(
        replayed.html.contains(
            r#"<p id="factor-error" class="errors" role="alert">the second factor was not accepted</p>"#
        ),
        "{}",
        replayed.html
    );
    assert!(replayed.headers.get(header::SET_COOKIE).is_none());
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn a_right_password_without_a_second_factor_is_sent_to_enrollment() {
    let (_upstream, gateway) = login_gateway().await;
    let token = add_user(&gateway, "gus").await;
    let set = crate::enrollment::post(
        &gateway,
        crate::enrollment::PASSWORD,
        serde_json::json!({ "token": token, "password": STRONG }),
    )
    .await;
    assert_eq!(set.status, StatusCode::OK);
    let (_, cookie, csrf) = form_page(&gateway, "/.wardgate/login").await;
    let fields = [("user", "gus"), ("password", STRONG), ("return_to", "")];
    let page = post_page(&gateway, "/.wardgate/login", &cookie, &csrf, &fields).await;
    assert_refusal_page(&page, StatusCode::FORBIDDEN, "WG-AUTH-012");
    assert!(
        page.html.contains("use the enrollment link"),
        "{}",
        page.html
    );
}
