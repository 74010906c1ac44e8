//! The audit trail (`audit`): what a request leaves in it, `wardgate audit verify` on the real
//! files, and the patient-data routes refusing when the trail cannot be written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;
use crate::policy::{POLICY, ROUTES, get_as, link, person};
use crate::sessions::{call, post_as};
use wardgate::audit::trail;

const DERMATOLOGY: &str = r#"policy:
  categories: { demographics: {}, labs: {}, notes: {} }
  roles:
    dermatologist: { care_team: [demographics, notes], request: [labs] }
"#;

pub(crate) const TRAIL: &str = r#"audit:
  path: audit/
  key_file: audit.key
  signing_key: audit-signing.key
  dev_generate_key: true
  checkpoint_every: 3
  checkpoint_copies: [elsewhere/checkpoints.jsonl]
  segment_size: 4KiB
"#;

fn config(upstream: &str) -> String {
    config_with(
        &format!("  ehr: {{ url: \"{upstream}\" }}"),
        &format!("{ROUTES}\n  - {{ name: open, path: /open/**, upstream: ehr, auth: none }}"),
        &format!("{DERMATOLOGY}{TRAIL}"),
    )
}

fn public_key(dir: &Path) -> Vec<u8> {
    wardgate::assertion::AssertionKey::load_or_create(&dir.join("audit-signing.key"))
        .unwrap()
        .0
        .public_key()
}

/// Every record of the trail in `dir`, opened.
/// The records as stored, each with its sequence number added as `seq`.
pub(crate) fn records(dir: &Path) -> Vec<Value> {
    let keyring = wardgate::identity::Keyring::read_file(&dir.join("audit.key")).unwrap();
    trail::records(&dir.join("audit"), &keyring)
        .unwrap()
        .into_iter()
        .map(|(seq, _, json)| {
            let mut record: Value = serde_json::from_slice(&json).unwrap();
            record["seq"] = seq.into();
            record
        })
        .collect()
}

fn verify_cli(dir: &Path) -> (bool, String) {
    audit_cli(dir, &["verify"])
}

/// `wardgate audit ARGS…` on the config in `dir`: success, and what it printed.
fn audit_cli(dir: &Path, args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .arg("audit")
        .args(args)
        .arg("--config")
        .arg(dir.join("gateway.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// The structure FHIR R4 requires of an `AuditEvent` (cardinalities and value sets of its
/// elements), and what IHE BALP's patient patterns add: a patient entity, a requestor, the
/// client's network address.
fn assert_audit_event(event: &Value) {
    assert_eq!(event["resourceType"], "AuditEvent");
    let object = event.as_object().unwrap();
    let known = [
        "resourceType",
        "id",
        "meta",
        "type",
        "subtype",
        "action",
        "recorded",
        "outcome",
        "outcomeDesc",
        "purposeOfEvent",
        "agent",
        "source",
        "entity",
    ];
    for key in object.keys() {
        assert!(
            known.contains(&key.as_str()),
            "not an AuditEvent element: {key}"
        );
    }
    assert!(event["type"]["code"].is_string() && event["type"]["system"].is_string());
    assert!(["C", "R", "U", "D", "E"].contains(&event["action"].as_str().unwrap()));
    assert!(["0", "4", "8", "12"].contains(&event["outcome"].as_str().unwrap()));
    let recorded = event["recorded"].as_str().unwrap();
    assert!(recorded.len() == 20 && recorded.ends_with('Z') && recorded.as_bytes()[10] == b'T');
    let agents = event["agent"].as_array().unwrap();
    assert!(!agents.is_empty());
    for agent in agents {
        assert!(agent["requestor"].is_boolean(), "agent.requestor is 1..1");
    }
    assert_eq!(agents.iter().filter(|a| a["requestor"] == true).count(), 1);
    assert!(agents.iter().any(|a| a["network"]["address"].is_string()));
    assert!(
        event["source"]["observer"].is_object(),
        "source.observer is 1..1"
    );
    let entities = event["entity"].as_array().unwrap();
    let patient = entities.iter().find(|e| e["role"]["code"] == "1").unwrap();
    assert!(
        patient["what"]["reference"]
            .as_str()
            .unwrap()
            .starts_with("Patient/")
    );
    let profile = event["meta"]["profile"][0].as_str().unwrap();
    assert!(
        profile.starts_with("https://profiles.ihe.net/ITI/BALP/"),
        "{profile}"
    );
}

/// The status and body of a GET on the admin listener (health endpoints need no token).
async fn admin_get(gateway: &TestGateway, path: &str) -> (StatusCode, String) {
    let response = plain_client()
        .request(get(&gateway.admin_url(path)))
        .await
        .unwrap();
    let status = response.status();
    (status, body_text(response).await)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wga"))
        .collect();
    found.sort();
    found
}

/// A gateway on which dana, a dermatologist on p7's care team, has read p7's notes once.
async fn dana_read_the_notes(upstream: &MockUpstream) -> (TestGateway, String) {
    let gateway = TestGateway::start(&config(&upstream.url())).await;
    let dana = person(&gateway, "dana", &["dermatologist"]).await;
    link(&gateway, "dana", "p7").await;
    let (status, _, _) = get_as(&gateway, "/api/patients/p7/notes/1", &dana).await;
    assert_eq!(status, StatusCode::OK);
    (gateway, dana)
}

#[tokio::test]
async fn every_request_leaves_its_record_and_verify_names_a_changed_one() {
    let upstream = MockUpstream::recording().await;
    let (gateway, dana) = dana_read_the_notes(&upstream).await;
    let (status, code, _) = get_as(&gateway, "/api/patients/p7/labs/1", &dana).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "WG-POLICY-001")
    );
    let (status, _, _) = get_as(&gateway, "/open/x", "").await;
    assert_eq!(status, StatusCode::OK);
    // The admin API answers the same queries while the gateway runs.
    let seen = admin(&gateway, http::Method::GET, "/admin/audit?patient=p7", "").await;
    let kinds: Vec<&str> = seen["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["decision", "request", "request"], "{seen}");
    let refused = admin(&gateway, http::Method::GET, "/admin/audit?who=me", "").await;
    assert_eq!(refused["error"], "WG-ADMIN-002", "{refused}");
    let (status, body) = admin_get(&gateway, "/admin/audit?patient=p7").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no admin token: {body}");
    assert!(!body.contains("p7"), "{body}");
    let dir = gateway.stop().await;

    let all = records(dir.path());
    let about = |path: &str, kind: &str| -> Vec<&Value> {
        all.iter()
            .filter(|r| r["path"] == path && r["kind"] == kind)
            .collect()
    };
    // The allowed read: its decision, on disk before it was forwarded, then how it ended.
    let decided = about("/api/patients/p7/notes/1", "decision");
    assert_eq!(decided.len(), 1, "{all:?}");
    let decided = decided[0];
    assert_eq!(decided["decision"], "allowed");
    assert_eq!(decided["patient"], "p7");
    assert_eq!(decided["categories"], serde_json::json!(["notes"]));
    assert_eq!(decided["purpose_of_use"], "TREAT");
    assert_eq!(decided["roles"], serde_json::json!(["dermatologist"]));
    assert_eq!(decided["route"], "notes");
    // How it ended names the decision record and repeats none of it (the query joins them).
    let ended: Vec<&Value> = all
        .iter()
        .filter(|r| r["kind"] == "request" && r["request_id"] == decided["request_id"])
        .collect();
    assert_eq!(ended.len(), 1, "{all:?}");
    assert_eq!(
        (ended[0]["status"].as_u64(), ended[0]["complete"].as_bool()),
        (Some(200), Some(true))
    );
    assert_eq!(ended[0]["decided_in"], decided["seq"]);
    assert_eq!(ended[0]["decision"], "allowed");
    for repeated in ["user", "patient", "path", "route", "categories", "roles"] {
        assert!(
            ended[0].get(repeated).is_none(),
            "{repeated}: {:?}",
            ended[0]
        );
    }
    // The refused one: no decision to forward, one record of the refusal.
    assert!(about("/api/patients/p7/labs/1", "decision").is_empty());
    let refused = about("/api/patients/p7/labs/1", "request");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["decision"], "refused");
    assert_eq!(refused[0]["code"], "WG-POLICY-001");
    assert_eq!(refused[0]["status"], 403);
    assert_eq!(
        about("/open/x", "request").len(),
        1,
        "every route is recorded"
    );
    // Security events are in the same trail.
    let logins: Vec<&Value> = all
        .iter()
        .filter(|r| r["kind"] == "security" && r["event"] == "login_succeeded")
        .collect();
    assert_eq!(logins.len(), 1, "{all:?}");
    assert_eq!(logins[0]["fields"]["user"], "dana");
    // The gateway's start and, last, its stop, on disk after everything queued before it.
    let started = all
        .iter()
        .find(|r| r["event"] == "gateway_started")
        .unwrap();
    let loaded = std::fs::read(dir.path().join("gateway.yaml")).unwrap();
    assert_eq!(
        started["fields"]["config_sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(loaded)),
        "the configuration loaded: {started}"
    );
    assert_eq!(all.last().unwrap()["event"], "gateway_stopped");
    let serialized = serde_json::to_string(&all).unwrap();
    assert!(
        !serialized.contains("wgs_") && !serialized.contains(&dana),
        "no token"
    );

    let (ok, text) = verify_cli(dir.path());
    assert!(ok, "{text}");
    assert!(text.starts_with("ok: "), "{text}");
    // Who saw patient p7's data: the two records of the notes read, the refused labs.
    let (ok, text) = audit_cli(
        dir.path(),
        &["query", "--patient", "p7", "--format", "json"],
    );
    assert!(ok, "{text}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| {
            let category = l["categories"][0].as_str().unwrap();
            (
                l["kind"].as_str().unwrap(),
                l["decision"].as_str().unwrap(),
                category,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("decision", "allowed", "notes"),
            ("request", "allowed", "notes"),
            ("request", "refused", "labs")
        ],
        "{text}"
    );
    let (ok, text) = audit_cli(
        dir.path(),
        &["query", "--decision", "refused", "--kind", "request"],
    );
    assert!(ok, "{text}");
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows[0].starts_with("time\tkind\tdecision"), "{text}");
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[1].contains("WG-POLICY-001"), "{text}");
    let keyless = trail::verify(
        &dir.path().join("audit"),
        &public_key(dir.path()),
        None,
        &[dir.path().join("elsewhere/checkpoints.jsonl")],
    )
    .unwrap();
    assert_eq!(keyless.records as usize, all.len());
    assert!(keyless.checkpoints >= 2);

    // The same as FHIR AuditEvents (IHE BALP), for a FHIR audit repository.
    let (ok, text) = audit_cli(
        dir.path(),
        &["query", "--patient", "p7", "--format", "fhir"],
    );
    assert!(ok, "{text}");
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 3);
    for event in &events {
        assert_audit_event(event);
    }
    let (ok, text) = audit_cli(
        dir.path(),
        &["query", "--kind", "security", "--format", "syslog"],
    );
    assert!(ok, "{text}");
    assert!(text.lines().all(|l| l.starts_with("<85>1 ")), "{text}");

    let (ok, text) = audit_cli(dir.path(), &["prove", "1"]);
    assert!(ok, "{text}");
    let proof: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(proof["seq"], 1);
    assert!(proof["checkpoint"]["size"].as_u64().unwrap() > 1, "{text}");

    // One byte of a record's sealed bytes changed: the command names the record.
    let first = &segments(dir.path())[0];
    let mut bytes = std::fs::read(first).unwrap();
    bytes[100] ^= 0x20;
    std::fs::write(first, &bytes).unwrap();
    let (ok, text) = verify_cli(dir.path());
    assert!(!ok, "{text}");
    assert!(text.starts_with("broken: record 0: "), "{text}");
}

#[tokio::test]
async fn patient_routes_refuse_while_the_trail_cannot_be_written_and_recover() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(&upstream.url())).await;
    let dana = person(&gateway, "dana", &["dermatologist"]).await;
    link(&gateway, "dana", "p7").await;
    // The segments the trail will move on to are a device that is always full.
    let audit = gateway.dir.path().join("audit");
    let full: Vec<PathBuf> = (1..400)
        .map(|seq| audit.join(format!("seg-{seq:020}.wga")))
        .collect();
    for path in &full {
        std::os::unix::fs::symlink("/dev/full", path).unwrap();
    }
    let mut refused = None;
    for _ in 0..200 {
        let (status, code, _) = get_as(&gateway, "/api/patients/p7/notes/1", &dana).await;
        if status != StatusCode::OK {
            refused = Some((status, code));
            break;
        }
    }
    assert_eq!(
        refused,
        Some((StatusCode::SERVICE_UNAVAILABLE, "WG-AUDIT-001".to_owned())),
        "the disk filled up"
    );
    let forwarded = upstream.seen().len();
    let (status, _) = admin_get(&gateway, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let metrics = metrics_containing(&gateway, "wardgate_audit_trail_writable 0").await;
    assert!(
        metrics.contains("wardgate_audit_trail_writable 0"),
        "{metrics}"
    );
    let pending = |metrics: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with("wardgate_audit_records_pending "))
            .unwrap_or_else(|| panic!("{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(pending(&metrics) >= 1.0, "the end records wait: {metrics}");
    let (status, _, _) = get_as(&gateway, "/open/x", "").await;
    assert_eq!(status, StatusCode::OK, "routes without patient data go on");
    let (status, code, _) = get_as(&gateway, "/api/patients/p7/notes/1", &dana).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "WG-AUDIT-001")
    );
    assert_eq!(
        upstream.seen().len(),
        forwarded + 1,
        "only the open route was forwarded"
    );

    // Space again: the next request is recorded and forwarded.
    for path in &full {
        std::fs::remove_file(path).unwrap();
    }
    let mut answered = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        answered = get_as(&gateway, "/api/patients/p7/notes/1", &dana).await.0;
        if answered == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answered, StatusCode::OK);
    assert_eq!(admin_get(&gateway, "/readyz").await.0, StatusCode::OK);
    let metrics = metrics_containing(&gateway, "wardgate_audit_records_pending 0").await;
    assert!(
        metrics.contains("wardgate_audit_trail_writable 1"),
        "{metrics}"
    );
    assert_eq!(pending(&metrics), 0.0, "{metrics}");
    let dir = gateway.stop().await;
    let (ok, text) = verify_cli(dir.path());
    assert!(ok, "{text}");
    let all = records(dir.path());
    let refusals = all.iter().filter(|r| r["code"] == "WG-AUDIT-001").count();
    assert!(
        refusals >= 2,
        "the refusals themselves were recorded once space came back"
    );
}

#[tokio::test]
async fn a_gateway_killed_under_load_has_the_decision_of_every_request_it_forwarded() {
    let upstream = MockUpstream::recording().await;
    let dir = tempfile::tempdir().unwrap();
    let binary = crate::binary::Binary::start(dir.path(), &config(&upstream.url())).await;
    let dana = person(&binary, "dana", &["dermatologist"]).await;
    link(&binary, "dana", "p7").await;
    let before = upstream.seen().len();
    // Sixteen clients reading as fast as they can until the gateway is gone.
    let mut clients = Vec::new();
    for client in 0..16 {
        let (http, url, token) = (
            binary.client(false),
            binary.url(&format!("/api/patients/p7/notes/{client}")),
            dana.clone(),
        );
        clients.push(tokio::spawn(async move {
            loop {
                let request = http::Request::builder()
                    .uri(&url)
                    .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(full(""))
                    .unwrap();
                if http.request(request).await.is_err() {
                    return;
                }
            }
        }));
    }
    while upstream.seen().len() < before + 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    binary.kill();
    for client in clients {
        client.await.unwrap();
    }
    let forwarded: Vec<String> = upstream
        .seen()
        .iter()
        .filter(|seen| seen.uri.path().starts_with("/api/patients/p7/notes/"))
        .map(|seen| seen.headers["x-request-id"].to_str().unwrap().to_owned())
        .collect();
    assert!(forwarded.len() >= 300);
    let decided: std::collections::HashSet<String> = records(dir.path())
        .iter()
        .filter(|r| r["kind"] == "decision")
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<&String> = forwarded
        .iter()
        .filter(|id| !decided.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "forwarded without a decision on disk: {lost:?}"
    );
}

#[tokio::test]
async fn keys_rotate_gives_the_trail_a_new_key_and_every_record_still_opens() {
    let upstream = MockUpstream::recording().await;
    let (gateway, _) = dana_read_the_notes(&upstream).await;
    let dir = gateway.stop().await;
    let before = records(dir.path()).len();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .args(["keys", "rotate", "--config"])
        .arg(dir.path().join("gateway.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}{errors}");
    assert!(text.contains("key 2 seals the audit records"), "{text}");
    let keys = std::fs::read_to_string(dir.path().join("audit.key")).unwrap();
    let ids: Vec<&str> = keys
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(':').next())
        .collect();
    assert_eq!(ids, ["1", "2"], "the old key stays for the old records");

    let gateway = TestGateway::start_in(dir, &config(&upstream.url())).await;
    let (status, _, _) = get_as(&gateway, "/open/x", "").await;
    assert_eq!(status, StatusCode::OK);
    let dir = gateway.stop().await;
    let all = records(dir.path());
    assert!(all.len() > before);
    assert!(all.iter().any(|r| r["path"] == "/open/x"), "{all:?}");
    let (ok, text) = verify_cli(dir.path());
    assert!(ok, "{text}");
    assert!(text.contains(&format!("{} opened", all.len())), "{text}");
}

#[tokio::test]
async fn the_break_glass_review_queue_shows_what_the_trail_recorded_under_each_use() {
    let upstream = MockUpstream::recording().await;
    let upstreams = format!("  ehr: {{ url: \"{}\" }}", upstream.url());
    let gateway = TestGateway::start(&config_with(
        &upstreams,
        ROUTES,
        &format!("{POLICY}{TRAIL}"),
    ))
    .await;
    let paul = person(&gateway, "paul", &["physician"]).await;
    let pia = person(&gateway, "pia", &["privacy-officer"]).await;
    let emergency =
        json!({ "patient": "p7", "reason": "unconscious", "text": "found unresponsive" });
    let opened = post_as(
        &gateway,
        "/.wardgate/api/access/break-glass",
        &paul,
        emergency,
    )
    .await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
    let id = opened.body["request"]["id"].as_str().unwrap().to_owned();
    for path in ["/api/patients/p7/labs/1", "/api/patients/p7/notes/2"] {
        assert_eq!(get_as(&gateway, path, &paul).await.0, StatusCode::OK);
    }
    let (status, _, _) = get_as(&gateway, "/api/patients/p8/labs/1", &paul).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "another patient: not under the access"
    );

    let (status, _, body) = call(&gateway, "/.wardgate/api/access/reviews", Some(&pia), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let queue: Value = serde_json::from_str(&body).unwrap();
    let waiting = &queue["requests"][0];
    assert_eq!(waiting["id"], id.as_str(), "{queue}");
    let seen: Vec<(&str, &str, u64)> = waiting["seen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["path"].as_str().unwrap(),
                s["categories"][0].as_str().unwrap(),
                s["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("/api/patients/p7/labs/1", "labs", 200),
            ("/api/patients/p7/notes/2", "notes", 200)
        ],
        "{queue}"
    );
    let listed = admin(&gateway, http::Method::GET, "/admin/break-glass", "").await;
    assert_eq!(listed["requests"][0]["seen"], waiting["seen"], "{listed}");
    gateway.stop().await;
}

#[tokio::test]
async fn checkpoints_also_go_to_a_webhook_and_syslog_and_verify_from_there() {
    let upstream = MockUpstream::recording().await;
    let hooks = MockUpstream::recording().await;
    let syslog = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let sinks = format!(
        "  checkpoint_webhook: {{ upstream: hooks, path: /hooks/checkpoints }}\n  checkpoint_syslog: udp://{}\n",
        syslog.local_addr().unwrap()
    );
    let upstreams = format!(
        "  ehr: {{ url: \"{}\" }}\n  hooks: {{ url: \"{}\" }}",
        upstream.url(),
        hooks.url()
    );
    let gateway = TestGateway::start(&config_with(
        &upstreams,
        ROUTES,
        &format!("{DERMATOLOGY}{TRAIL}{sinks}"),
    ))
    .await;
    let dana = person(&gateway, "dana", &["dermatologist"]).await;
    link(&gateway, "dana", "p7").await;
    assert_eq!(
        get_as(&gateway, "/api/patients/p7/notes/1", &dana).await.0,
        StatusCode::OK
    );
    let dir = gateway.stop().await;
    // Every checkpoint, as the webhook received it: the POSTs run in the background.
    let mut posted = Vec::new();
    for _ in 0..200 {
        posted = hooks.seen();
        if posted.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(posted.len() >= 2, "{posted:?}");
    let mut received = String::new();
    for post in &posted {
        assert_eq!(
            (post.method.as_str(), post.uri.path()),
            ("POST", "/hooks/checkpoints")
        );
        received.push_str(std::str::from_utf8(&post.body).unwrap());
        received.push('\n');
    }
    let copy = dir.path().join("from-the-webhook.jsonl");
    std::fs::write(&copy, &received).unwrap();
    let verified = trail::verify(
        &dir.path().join("audit"),
        &public_key(dir.path()),
        None,
        &[copy],
    )
    .unwrap();
    assert!(verified.checkpoints >= posted.len() * 2, "{verified:?}");
    // And as syslog lines.
    let mut buffer = [0u8; 4096];
    let size = syslog.recv(&mut buffer).unwrap();
    let line = std::str::from_utf8(&buffer[..size]).unwrap();
    assert!(line.starts_with("<86>1 "), "{line}");
    let checkpoint: Value = serde_json::from_str(&line[line.find('{').unwrap()..]).unwrap();
    assert!(
        checkpoint["signature"].is_string() && checkpoint["size"].is_u64(),
        "{line}"
    );
}

#[tokio::test]
async fn an_upstream_failure_and_a_client_gone_early_leave_one_record_each() {
    let (big, mut dropped) = crate::hardening::endless_upstream(64 << 20).await;
    let upstreams = format!(
        "  ehr: {{ url: \"{}\" }}\n  dead: {{ url: \"http://127.0.0.1:1\" }}",
        big.url()
    );
    let routes = format!(
        "{ROUTES}\n  - {{ name: big, path: /big/**, upstream: ehr, auth: none }}\n  - {{ name: dead, path: /dead/**, upstream: dead, auth: none }}"
    );
    let gateway = TestGateway::start(&config_with(
        &upstreams,
        &routes,
        &format!("{DERMATOLOGY}{TRAIL}"),
    ))
    .await;
    let (status, code, _) = get_as(&gateway, "/dead/x", "").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{code}");
    // A client that reads the start of a long answer and leaves.
    let mut tls = gateway.raw_tls().await;
    tokio::io::AsyncWriteExt::write_all(
        &mut tls,
        b"GET /big/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    let mut start = [0u8; 4096];
    tokio::io::AsyncReadExt::read(&mut tls, &mut start)
        .await
        .unwrap();
    drop(tls);
    assert!(
        tokio::time::timeout(Duration::from_secs(10), dropped.recv())
            .await
            .is_ok(),
        "the gateway let go of the upstream"
    );
    let dir = gateway.stop().await;
    let all = records(dir.path());
    let ended = |path: &str| -> Vec<&Value> {
        all.iter()
            .filter(|r| r["kind"] == "request" && r["path"] == path)
            .collect()
    };
    let failed = ended("/dead/x");
    assert_eq!(failed.len(), 1, "{all:?}");
    assert_eq!(
        (&failed[0]["decision"], &failed[0]["status"]),
        (&Value::from("failed"), &Value::from(502))
    );
    assert!(failed[0]["code"].as_str().unwrap().starts_with("WG-UP-"));
    let cut = ended("/big/x");
    assert_eq!(cut.len(), 1, "{all:?}");
    assert_eq!(cut[0]["complete"], false, "{:?}", cut[0]);
    assert_eq!(cut[0]["status"], 200);
}

#[tokio::test]
async fn a_trail_with_records_whose_signing_key_is_gone_stops_the_start_and_makes_no_new_key() {
    let upstream = MockUpstream::recording().await;
    let (gateway, _) = dana_read_the_notes(&upstream).await;
    let dir = gateway.stop().await;
    let key = dir.path().join("audit-signing.key");
    std::fs::remove_file(&key).unwrap();
    let error = start_error(&dir.path().join("gateway.yaml")).await;
    assert!(
        error.contains("checkpoint signing key") && error.contains("restore the key"),
        "{error}"
    );
    assert!(
        !key.exists(),
        "no key that would sign a history it cannot verify"
    );
}
