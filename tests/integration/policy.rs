//! The access policy end to end, over real TLS: the article's dermatologist, care-team links
//! and access grants through the JSON API and the admin API, operators kept away from patient
//! data, and the decision the upstream learns in the signed assertion.

use http::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::harness::*;
use crate::sessions::{call, enroll, post_as, totp_login, unix_now};
use wardgate::auth::events::SecurityEvent;

pub(crate) const POLICY: &str = r#"policy:
  categories: { demographics: {}, labs: {}, notes: {}, imaging: {}, mental-health: { sensitive: true } }
  roles:
    physician: { care_team: [demographics, labs, notes, imaging], request: [mental-health] }
    dermatologist: { care_team: [demographics, notes, imaging], request: [labs] }
    chief-physician: { care_team: [demographics, labs, notes, imaging], approve: true }
    operator: { operator: true }
    privacy-officer: { review: true }
  grants: { max_duration: 8h, pending_ttl: 1h, approvals: 1 }
  break_glass: { roles: [physician], duration: 30m, reauth_within: 5m, reasons: [unconscious, life-threat] }
"#;

/// The patient routes of these tests: labs and notes by path parameter, observations by query.
pub(crate) const ROUTES: &str = r#"  - name: labs
    path: "/api/patients/{patient}/labs/**"
    upstream: ehr
    auth: session
    patient_data: true
    data: labs
    patient: "{patient}"
    identity: { headers: [id], assertion: [roles] }
  - name: notes
    path: "/api/patients/{patient}/notes/**"
    upstream: ehr
    auth: session
    patient_data: true
    data: notes
    patient: "{patient}"
  - name: observations
    path: /api/observations
    upstream: ehr
    auth: session
    patient_data: true
    data: labs
    patient: { query: patient }"#;

pub(crate) fn config(upstream: &str) -> String {
    config_with(&format!("  ehr: {{ url: \"{upstream}\" }}"), ROUTES, POLICY)
}

/// `name` enrolled with `roles`, logged in: the bearer token.
pub(crate) async fn person(gateway: &impl Listening, name: &str, roles: &[&str]) -> String {
    let (secret, _) = enroll(gateway, name).await;
    let path = format!("/admin/users/{name}/roles");
    admin(
        gateway,
        Method::PUT,
        &path,
        &json!({ "roles": roles }).to_string(),
    )
    .await;
    totp_login(gateway, name, &secret).await
}

pub(crate) async fn link(gateway: &impl Listening, user: &str, patient: &str) {
    let body = json!({ "user": user, "patient": patient }).to_string();
    let linked = admin(gateway, Method::POST, "/admin/care-team", &body).await;
    assert_eq!(linked["links"][0]["patient"], patient, "{linked}");
}

/// The status and error code of a GET of `path` with `token`, and the response headers.
pub(crate) async fn get_as(
    gateway: &impl Listening,
    path: &str,
    token: &str,
) -> (StatusCode, String, http::HeaderMap) {
    let (status, headers, body) = call(gateway, path, Some(token), &[]).await;
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, code, headers)
}

#[tokio::test]
async fn the_articles_dermatologist_asks_for_the_labs_and_a_chief_physician_approves() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(&upstream.url())).await;
    let dana = person(&gateway, "dana", &["dermatologist"]).await;
    let carl = person(&gateway, "carl", &["chief-physician"]).await;
    let paul = person(&gateway, "paul", &["physician"]).await;
    link(&gateway, "dana", "p7").await;

    // On the care team: the notes, not the labs; the refusal says where to ask.
    let (status, _, _) = get_as(&gateway, "/api/patients/p7/notes/1", &dana).await;
    assert_eq!(status, StatusCode::OK);
    let (status, code, headers) = get_as(&gateway, "/api/patients/p7/labs/1", &dana).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "WG-POLICY-001")
    );
    assert_eq!(
        headers[header::LINK],
        r#"</.wardgate/api/access/requests>; rel="access-request""#
    );
    // Another patient's notes: not on that care team.
    let (status, code, _) = get_as(&gateway, "/api/patients/p8/notes/1", &dana).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "WG-POLICY-001")
    );
    // A physician not on the care team.
    let (status, code, _) = get_as(&gateway, "/api/patients/p7/labs/1", &paul).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "WG-POLICY-001")
    );

    // The request, with a reason.
    let asked = post_as(
        &gateway,
        "/.wardgate/api/access/requests",
        &dana,
        json!({ "patient": "p7", "categories": ["labs"], "reason": "suspected drug rash", "duration": "10m" }),
    )
    .await;
    assert_eq!(asked.status, StatusCode::CREATED, "{}", asked.body);
    assert_eq!(asked.body["request"]["status"], "pending");
    let id = asked.body["request"]["id"].as_str().unwrap().to_owned();

    // Never self-approval: not through the JSON API, not through the admin API.
    let own = post_as(
        &gateway,
        "/.wardgate/api/access/approve",
        &dana,
        json!({ "request": id }),
    )
    .await;
    assert_eq!(own.body["error"], "WG-GRANT-002", "{}", own.body);
    let path = format!("/admin/grants/{id}/approve");
    let own = admin(
        &gateway,
        Method::POST,
        &path,
        &json!({ "approver": "dana" }).to_string(),
    )
    .await;
    assert_eq!(own["error"], "WG-GRANT-002", "{own}");
    // Nor by someone whose roles do not approve.
    let other = post_as(
        &gateway,
        "/.wardgate/api/access/approve",
        &paul,
        json!({ "request": id }),
    )
    .await;
    assert_eq!(other.body["error"], "WG-GRANT-003", "{}", other.body);
    let (status, _, _) = get_as(&gateway, "/api/patients/p7/labs/1", &dana).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "nothing was approved");

    // The chief physician sees it waiting and approves.
    let pending =
        crate::sessions::call(&gateway, "/.wardgate/api/access/pending", Some(&carl), &[]).await;
    let pending: Value = serde_json::from_str(&pending.2).unwrap();
    assert_eq!(pending["requests"][0]["id"], id.as_str(), "{pending}");
    let approved = post_as(
        &gateway,
        "/.wardgate/api/access/approve",
        &carl,
        json!({ "request": id, "comment": "for this episode" }),
    )
    .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    assert_eq!(approved.body["request"]["status"], "active");

    // The labs now answer, and the upstream learns why in the signed assertion.
    let (status, _, _) = get_as(&gateway, "/api/patients/p7/labs/1", &dana).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get_as(&gateway, "/api/observations?patient=p7", &dana).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the same grant on a route that reads the query"
    );
    let (status, _, _) = get_as(&gateway, "/api/patients/p9/labs/1", &dana).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the grant is for p7 only");
    let verified = assertion_of(&gateway, &upstream, "/api/patients/p7/labs/1", "labs").await;
    assert_eq!(verified["purpose_of_use"], "TREAT");
    assert_eq!(verified["grants"], json!([id]));
    assert_eq!(verified["patient"], "p7");
    let seen = upstream.seen();
    let notes = seen
        .iter()
        .find(|s| s.uri.path() == "/api/patients/p7/notes/1")
        .unwrap();
    assert!(
        notes.headers.get("x-wardgate-assertion").is_none(),
        "the notes route asked for none"
    );

    // An approver asking for themselves does not count either, through either API.
    let asked = post_as(
        &gateway,
        "/.wardgate/api/access/requests",
        &carl,
        json!({ "patient": "p9", "categories": ["labs"], "reason": "second opinion", "duration": "1h" }),
    )
    .await;
    let own_id = asked.body["request"]["id"].as_str().unwrap().to_owned();
    let own = post_as(
        &gateway,
        "/.wardgate/api/access/approve",
        &carl,
        json!({ "request": own_id }),
    )
    .await;
    assert_eq!(own.body["error"], "WG-GRANT-002", "{}", own.body);
    let path = format!("/admin/grants/{own_id}/approve");
    let own = admin(
        &gateway,
        Method::POST,
        &path,
        &json!({ "approver": "carl" }).to_string(),
    )
    .await;
    assert_eq!(own["error"], "WG-GRANT-002", "{own}");
    let denied = post_as(
        &gateway,
        "/.wardgate/api/access/deny",
        &carl,
        json!({ "request": own_id }),
    )
    .await;
    assert_eq!(denied.body["error"], "WG-GRANT-002", "{}", denied.body);

    // Past the grant's end: refused again.
    gateway.advance(11 * 60);
    let (status, code, _) = get_as(&gateway, "/api/patients/p7/labs/1", &dana).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "WG-POLICY-001")
    );
    let mine =
        crate::sessions::call(&gateway, "/.wardgate/api/access/requests", Some(&dana), &[]).await;
    let mine: Value = serde_json::from_str(&mine.2).unwrap();
    assert_eq!(mine["requests"][0]["status"], "ended", "{mine}");
}

#[tokio::test]
async fn operators_never_see_patient_data_and_bad_requests_are_refused() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(&upstream.url())).await;
    let olga = person(&gateway, "olga", &["operator", "physician"]).await;
    let dana = person(&gateway, "dana", &["dermatologist"]).await;
    link(&gateway, "olga", "p7").await;
    link(&gateway, "dana", "p7").await;
    for path in ["/api/patients/p7/notes/1", "/api/patients/p7/labs/1"] {
        let (status, code, _) = get_as(&gateway, path, &olga).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::FORBIDDEN, "WG-POLICY-003"),
            "{path}"
        );
    }
    let asked = post_as(
        &gateway,
        "/.wardgate/api/access/requests",
        &olga,
        json!({ "patient": "p7", "categories": ["labs"], "reason": "curious", "duration": "1h" }),
    )
    .await;
    assert_eq!(
        asked.body["error"], "WG-GRANT-006",
        "an operator may ask for nothing"
    );

    // No patient, two patients, or a patient id outside the alphabet.
    for path in [
        "/api/observations",
        "/api/observations?patient=p7&patient=p8",
        "/api/observations?patient=p%2F7",
    ] {
        let (status, code, _) = get_as(&gateway, path, &dana).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "WG-POLICY-004"),
            "{path}"
        );
    }
    // Requests the policy cannot grant.
    for (body, why) in [
        (
            json!({ "patient": "p7", "categories": ["mental-health"], "reason": "r", "duration": "1h" }),
            "not requestable for a dermatologist",
        ),
        (
            json!({ "patient": "p7", "categories": ["labs"], "reason": "r", "duration": "9h" }),
            "over max_duration",
        ),
        (
            json!({ "patient": "p7", "categories": ["labs"], "reason": "  ", "duration": "1h" }),
            "no reason",
        ),
        (
            json!({ "patient": "p 7", "categories": ["labs"], "reason": "r", "duration": "1h" }),
            "not a patient id",
        ),
        (
            json!({ "patient": "p7", "categories": [], "reason": "r", "duration": "1h" }),
            "no category",
        ),
    ] {
        let asked = post_as(&gateway, "/.wardgate/api/access/requests", &dana, body).await;
        assert_eq!(asked.body["error"], "WG-GRANT-006", "{why}: {}", asked.body);
    }
    let pending =
        crate::sessions::call(&gateway, "/.wardgate/api/access/pending", Some(&dana), &[]).await;
    assert_eq!(
        pending.0,
        StatusCode::FORBIDDEN,
        "only approvers see the queue"
    );
    assert!(upstream.seen().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn care_teams_are_imported_all_or_none_and_a_disabled_account_loses_its_grants() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(&upstream.url())).await;
    let dana = person(&gateway, "dana", &["dermatologist"]).await;
    person(&gateway, "carl", &["chief-physician"]).await;

    // One bad line (an unknown user) and nothing of the list is stored.
    let list = "{\"user\":\"dana\",\"patient\":\"p1\"}\n{\"user\":\"nobody\",\"patient\":\"p2\"}\n";
    let refused = admin(&gateway, Method::POST, "/admin/care-team/import", list).await;
    assert_eq!(refused["error"], "WG-ADMIN-004", "{refused}");
    let links = admin(&gateway, Method::GET, "/admin/care-team", "").await;
    assert_eq!(links["links"], json!([]), "{links}");
    let list = "{\"user\":\"dana\",\"patient\":\"p1\"}\n\n{\"user\":\"dana\",\"patient\":\"p2\",\"until\":4000000000}\n";
    let imported = admin(&gateway, Method::POST, "/admin/care-team/import", list).await;
    assert_eq!(imported["imported"], 2, "{imported}");
    let (status, _, _) = get_as(&gateway, "/api/patients/p2/notes/1", &dana).await;
    assert_eq!(status, StatusCode::OK);
    let removed = admin(&gateway, Method::DELETE, "/admin/care-team/dana/p2", "").await;
    assert_eq!(removed["removed"], 1, "{removed}");
    let (status, _, _) = get_as(&gateway, "/api/patients/p2/notes/1", &dana).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // An approved grant, approved by the admin API in the approver's name, then revoked by
    // disabling the account.
    let asked = post_as(
        &gateway,
        "/.wardgate/api/access/requests",
        &dana,
        json!({ "patient": "p1", "categories": ["labs"], "reason": "a rash", "duration": "1h" }),
    )
    .await;
    let id = asked.body["request"]["id"].as_str().unwrap().to_owned();
    let path = format!("/admin/grants/{id}/approve");
    let approved = admin(
        &gateway,
        Method::POST,
        &path,
        &json!({ "approver": "carl" }).to_string(),
    )
    .await;
    assert_eq!(approved["request"]["status"], "active", "{approved}");
    let (status, _, _) = get_as(&gateway, "/api/patients/p1/labs/1", &dana).await;
    assert_eq!(status, StatusCode::OK);
    let disabled = admin(&gateway, Method::POST, "/admin/users/dana/disable", "").await;
    assert_eq!(disabled["grants_revoked"], 1, "{disabled}");
    let grants = admin(&gateway, Method::GET, "/admin/grants", "").await;
    assert_eq!(grants["requests"][0]["status"], "revoked", "{grants}");
}

/// The upstream's verified assertion of the request it saw for `path`.
pub(crate) async fn assertion_of(
    gateway: &TestGateway,
    upstream: &MockUpstream,
    path: &str,
    audience: &str,
) -> Value {
    let seen = upstream.seen();
    let request = seen.iter().rev().find(|s| s.uri.path() == path).unwrap();
    let token = request.headers["x-wardgate-assertion"].to_str().unwrap();
    let jwks = body_text(
        gateway
            .client(false)
            .request(get(&gateway.url("/.wardgate/jwks.json")))
            .await
            .unwrap(),
    )
    .await;
    let jwks: Value = serde_json::from_str(&jwks).unwrap();
    wardgate::assertion::verify(&jwks, token, audience, unix_now()).unwrap()
}

/// The test config, with break-glass uses announced to `alerts` (`/hooks/break-glass`).
pub(crate) fn alerting(upstream: &MockUpstream, alerts: &MockUpstream) -> String {
    config(&upstream.url())
        .replace(
            "reasons: [unconscious, life-threat] }",
            "reasons: [unconscious, life-threat], alert: { upstream: alerts, path: /hooks/break-glass } }",
        )
        .replace("  ehr: {", &format!("  alerts: {{ url: \"{}\" }}\n  ehr: {{", alerts.url()))
}

/// The one alert `alerts` received (it is sent in the background: waited for up to 2 s), a
/// POST to `/hooks/break-glass`: its JSON summary.
pub(crate) async fn the_alert(alerts: &MockUpstream) -> Value {
    for _ in 0..200 {
        if !alerts.seen().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let alert = alerts.seen();
    assert_eq!(alert.len(), 1, "{alert:?}");
    assert_eq!(
        (alert[0].method.as_str(), alert[0].uri.path()),
        ("POST", "/hooks/break-glass")
    );
    serde_json::from_slice(&alert[0].body).unwrap()
}

#[tokio::test]
async fn break_glass_opens_one_record_at_once_is_reported_and_waits_for_review() {
    let upstream = MockUpstream::recording().await;
    let alerts = MockUpstream::recording().await;
    let gateway = TestGateway::start(&alerting(&upstream, &alerts)).await;
    let paul = person(&gateway, "paul", &["physician"]).await;
    let dana = person(&gateway, "dana", &["dermatologist"]).await;
    let priv_ = person(&gateway, "pia", &["privacy-officer"]).await;
    let (status, code, _) = get_as(&gateway, "/api/patients/p7/labs/1", &paul).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "WG-POLICY-001")
    );

    let glass = "/.wardgate/api/access/break-glass";
    let emergency =
        |reason: &str| json!({ "patient": "p7", "reason": reason, "text": "found unresponsive" });
    let refused = post_as(&gateway, glass, &dana, emergency("unconscious")).await;
    assert_eq!(
        refused.body["error"], "WG-GRANT-008",
        "not a break-glass role"
    );
    let refused = post_as(&gateway, glass, &paul, emergency("curiosity")).await;
    assert_eq!(
        refused.body["error"], "WG-GRANT-006",
        "not a configured reason"
    );

    let mut events = gateway.events.subscribe();
    let opened = post_as(&gateway, glass, &paul, emergency("unconscious")).await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
    let id = opened.body["request"]["id"].as_str().unwrap().to_owned();
    assert_eq!(opened.body["request"]["status"], "active");
    assert_eq!(
        opened.body["request"]["emergency"]["reason_code"],
        "unconscious"
    );
    let mut reported = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let SecurityEvent::AccessChanged {
            user,
            action,
            grant,
        } = &*event
        {
            reported.push((user.clone(), *action, grant.clone()));
        }
    }
    assert_eq!(
        reported,
        [("paul".to_owned(), "break_glass_opened", id.clone())]
    );
    let summary = the_alert(&alerts).await;
    assert_eq!(
        (
            &summary["grant"],
            &summary["user"],
            &summary["patient"],
            &summary["reason_code"]
        ),
        (
            &json!(id),
            &json!("paul"),
            &json!("p7"),
            &json!("unconscious")
        )
    );

    // At once, and the upstream learns it is an emergency.
    let (status, _, _) = get_as(&gateway, "/api/patients/p7/labs/1", &paul).await;
    assert_eq!(status, StatusCode::OK);
    let verified = assertion_of(&gateway, &upstream, "/api/patients/p7/labs/1", "labs").await;
    assert_eq!(verified["purpose_of_use"], "ETREAT");
    assert_eq!(verified["grants"], json!([id]));
    let (status, _, _) = get_as(&gateway, "/api/patients/p8/labs/1", &paul).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "one patient only");

    // The review queue: for reviewers only, never by the person who opened it.
    let queue = call(&gateway, "/.wardgate/api/access/reviews", Some(&paul), &[]).await;
    assert_eq!(queue.0, StatusCode::FORBIDDEN);
    let queue = call(&gateway, "/.wardgate/api/access/reviews", Some(&priv_), &[]).await;
    let queue: Value = serde_json::from_str(&queue.2).unwrap();
    assert_eq!(queue["requests"][0]["id"], id.as_str(), "{queue}");
    let review = |outcome: &str| json!({ "request": id, "outcome": outcome, "comment": "checked the chart" });
    let own = post_as(
        &gateway,
        "/.wardgate/api/access/review",
        &paul,
        review("appropriate"),
    )
    .await;
    assert_eq!(own.body["error"], "WG-GRANT-002", "{}", own.body);
    let path = format!("/admin/break-glass/{id}/review");
    let body = json!({ "reviewer": "paul", "outcome": "appropriate" }).to_string();
    assert_eq!(
        admin(&gateway, Method::POST, &path, &body).await["error"],
        "WG-GRANT-002"
    );
    // A comment is at most MAX_REASON characters.
    let longest = "é".repeat(wardgate::access::MAX_REASON);
    let verdict =
        |comment: &str| json!({ "request": id, "outcome": "appropriate", "comment": comment });
    let overlong = post_as(
        &gateway,
        "/.wardgate/api/access/review",
        &priv_,
        verdict(&format!("{longest}x")),
    )
    .await;
    assert_eq!(
        (overlong.status, overlong.body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("WG-GRANT-006"))
    );
    let done = post_as(
        &gateway,
        "/.wardgate/api/access/review",
        &priv_,
        verdict(&longest),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(
        done.body["request"]["emergency"]["review"]["outcome"],
        "appropriate"
    );
    let body = json!({ "reviewer": "pia", "outcome": "inappropriate" }).to_string();
    assert_eq!(
        admin(&gateway, Method::POST, &path, &body).await["error"],
        "WG-GRANT-010"
    );
    let queue = admin(&gateway, Method::GET, "/admin/break-glass", "").await;
    assert_eq!(queue["requests"], json!([]), "{queue}");

    // A second factor older than reauth_within: step up first. And the access ends by itself.
    gateway.advance(6 * 60);
    let stale = post_as(
        &gateway,
        glass,
        &paul,
        json!({ "patient": "p8", "reason": "life-threat", "text": "x" }),
    )
    .await;
    assert_eq!(stale.body["error"], "WG-SESSION-004", "{}", stale.body);
    gateway.advance(12 * 60);
    let (status, _, _) = get_as(&gateway, "/api/patients/p7/labs/1", &paul).await;
    assert_eq!(status, StatusCode::OK, "18 minutes in: still open");
    gateway.advance(13 * 60);
    let (status, code, _) = get_as(&gateway, "/api/patients/p7/labs/1", &paul).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "WG-POLICY-001")
    );
}

/// The README's walk through the article's case, on the real binary and the bundled
/// `gateway.yaml` (its ports moved to free ones), against the built-in demo patients.
#[tokio::test]
async fn the_bundled_config_walks_the_articles_case_on_the_demo_patients() {
    let demo_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bundled = include_str!("../../gateway.yaml")
        .replace("\"0.0.0.0:8443\"", "\"127.0.0.1:0\"")
        .replace(
            "  http_redirect: \"0.0.0.0:8080\"",
            "  http_redirect: \"127.0.0.1:0\"",
        )
        .replace("\"127.0.0.1:9443\"", "\"127.0.0.1:0\"")
        .replace("127.0.0.1:9001", &format!("127.0.0.1:{demo_port}"))
        .replace("certs/gateway.", "gateway.");
    let dir = tempfile::tempdir().unwrap();
    let binary = crate::binary::Binary::start(dir.path(), &bundled).await;
    let dana = person(&binary, "dana", &["dermatologist"]).await;
    let carl = person(&binary, "carl", &["chief-physician"]).await;
    link(&binary, "dana", "1").await;
    let (status, _, body) = call(&binary, "/api/patients/1/notes", Some(&dana), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("Itchy rash"), "{body}");
    let (status, code, _) = get_as(&binary, "/api/patients/1/labs", &dana).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "WG-POLICY-001")
    );
    let asked = post_as(
        &binary,
        "/.wardgate/api/access/requests",
        &dana,
        json!({ "patient": "1", "categories": ["labs"], "reason": "rash after a new drug", "duration": "2h" }),
    )
    .await;
    let id = asked.body["request"]["id"].clone();
    let approved = post_as(
        &binary,
        "/.wardgate/api/access/approve",
        &carl,
        json!({ "request": id }),
    )
    .await;
    assert_eq!(
        approved.body["request"]["status"], "active",
        "{}",
        approved.body
    );
    let (status, _, body) = call(&binary, "/api/patients/1/labs", Some(&dana), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("Glucose"), "{body}");
    binary.stop().await;
}

/// `wardgate care-team …`, `grants …` and `break-glass review` against the running binary.
#[tokio::test]
async fn the_commands_manage_care_teams_grants_and_the_review_queue() {
    let upstream = MockUpstream::recording().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&upstream.url());
    let binary = crate::binary::Binary::start(dir.path(), &config).await;
    let file = dir.path().join("cli.yaml");
    let admin_addr = binary.addr("admin");
    let for_cli = config.replace(
        "admin: \"127.0.0.1:0\"",
        &format!("admin: \"{admin_addr}\""),
    );
    std::fs::write(&file, for_cli).unwrap();
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
            .args(args)
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        let answer = String::from_utf8_lossy(&output.stdout).into_owned();
        let errors = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code(), answer, errors)
    };
    let dana = person(&binary, "dana", &["dermatologist"]).await;
    let (code, _, errors) = cli(&["care-team", "add", "dana", "p7"]);
    assert_eq!(code, Some(0), "{errors}");
    let list = dir.path().join("links.jsonl");
    std::fs::write(&list, "{\"user\":\"dana\",\"patient\":\"p8\"}\n").unwrap();
    let (code, answer, errors) = cli(&["care-team", "import", list.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{errors}");
    assert!(answer.contains("\"imported\": 1"), "{answer}");
    let (_, answer, _) = cli(&["care-team", "list", "--user", "dana"]);
    let links: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(links["links"].as_array().unwrap().len(), 2, "{answer}");
    let (status, _, _) = get_as(&binary, "/api/patients/p8/notes/1", &dana).await;
    assert_eq!(status, StatusCode::OK);
    let (code, _, _) = cli(&["care-team", "remove", "dana", "p8"]);
    assert_eq!(code, Some(0));
    let (status, _, _) = get_as(&binary, "/api/patients/p8/notes/1", &dana).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (code, _, errors) = cli(&["care-team", "add", "nobody", "p1"]);
    assert_eq!(code, Some(1));
    assert!(errors.contains("WG-ADMIN-004"), "{errors}");

    let asked = post_as(
        &binary,
        "/.wardgate/api/access/requests",
        &dana,
        json!({ "patient": "p7", "categories": ["labs"], "reason": "a rash", "duration": "1h" }),
    )
    .await;
    let id = asked.body["request"]["id"].as_str().unwrap().to_owned();
    let (_, answer, _) = cli(&["grants", "list"]);
    assert!(answer.contains(&id), "{answer}");
    let (code, answer, errors) = cli(&["grants", "revoke", &id]);
    assert_eq!(code, Some(0), "{errors}");
    assert!(answer.contains("\"revoked\""), "{answer}");
    let (code, _, errors) = cli(&["grants", "revoke", &id]);
    assert_eq!(code, Some(1));
    assert!(errors.contains("WG-GRANT-007"), "{errors}");
    let (code, answer, _) = cli(&["break-glass", "review"]);
    assert_eq!(code, Some(0));
    assert!(answer.contains("\"requests\": []"), "{answer}");
    let (code, _, errors) = cli(&["break-glass", "review", &id]);
    assert_eq!(code, Some(1));
    assert!(errors.contains("--reviewer"), "{errors}");
    binary.stop().await;
}
