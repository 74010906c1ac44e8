//! The gateway's own pages: enrollment end to end in a real headless Chromium
//! (`tests/browser/enroll.mjs`, playwright-core), and with a plain HTTP client for what no
//! browser would send (forged posts) and for the headers of every page.
//!
//! `scripts/browser-deps.sh` installs Chromium, oathtool and playwright-core; without them the
//! browser test fails (it never skips). Screenshots land in
//! `$CARGO_TARGET_DIR/browser-artifacts/<test>/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Method, Request, StatusCode, header};
use serde_json::Value;

use crate::harness::*;

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
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
fn artifacts(test: &str) -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("wardgate-target"));
    base.join("browser-artifacts").join(test)
}

/// Runs `tests/browser/<script>` with `env`; returns the JSON line it printed.
async fn run_browser(script: &str, env: &[(&str, &str)], artifacts: &Path) -> Value {
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
    let run = tokio::process::Command::new("node")
        .arg(root.join("tests/browser").join(script))
        .current_dir(root.join("tests/browser"))
        .envs(env.iter().copied())
        .env("ARTIFACTS", artifacts)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(BROWSER_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("{script} ran longer than {BROWSER_TIMEOUT:?}"))
        .unwrap_or_else(|error| panic!("node could not run ({error}): {fix}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("screenshots: {}", artifacts.display());
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|_| panic!("{script} printed no JSON: {stdout}"))
}

#[tokio::test]
async fn a_new_user_enrolls_in_chromium() {
    let (upstream, gateway) = gateway().await;
    let token = add_user(&gateway, "alice").await;
    let dir = artifacts("a_new_user_enrolls_in_chromium");
    let url = gateway.url("");
    let seen = run_browser(
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
    assert!(
        seen["virtual_authenticator"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    for shot in seen["screenshots"].as_array().unwrap() {
        assert!(Path::new(shot.as_str().unwrap()).is_file(), "{shot}");
    }

    // The enrollment really happened.
    assert_enrolled(&gateway, "alice").await;
    assert!(upstream.seen().is_empty());
}

/// A page as a plain client sees it.
struct Page {
    status: StatusCode,
    headers: http::HeaderMap,
    html: String,
}

async fn fetch(gateway: &TestGateway, request: Request<TestBody>) -> Page {
    let response = gateway.client(false).request(request).await.unwrap();
    Page {
        status: response.status(),
        headers: response.headers().clone(),
        html: body_text(response).await,
    }
}

/// The `value` of the hidden input named `name`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name}: {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

fn assert_page_headers(page: &Page) {
    assert_eq!(
        page.headers[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(page.headers[header::CONTENT_SECURITY_POLICY], CSP);
    assert_eq!(page.headers["x-frame-options"], "DENY");
}

fn assert_refusal_page(page: &Page, status: StatusCode, code: &str) {
    assert_eq!(page.status, status, "{}", page.html);
    assert_page_headers(page);
    assert!(
        page.html
            .contains(&format!(r#"<span id="refusal-code">{code}</span>"#)),
        "{}",
        page.html
    );
}

/// The password form: its CSRF cookie (`name=value`) and hidden field.
async fn password_form(gateway: &TestGateway, token: &str) -> (Page, String, String) {
    let page = fetch(
        gateway,
        get(&gateway.url(&format!("/.wardgate/enroll?token={token}"))),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let set_cookie = page.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let csrf = hidden(&page.html, "csrf");
    (page, cookie, csrf)
}

fn form_post(
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

fn encode(value: &str) -> String {
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
            "/.wardgate/login".to_owned(),
            StatusCode::NOT_FOUND,
            "WG-AUTH-006",
        ),
        (
            "/.wardgate/".to_owned(),
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
            format!("{}&x={}", body(&csrf), "y".repeat(9 * 1024)),
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
