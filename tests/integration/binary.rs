//! The real `wardgate` binary: start, serve, log one JSON record per request, exit 0 on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;

use crate::harness::*;

/// Kills the gateway if the test fails before it stopped it.
struct Reaped(Option<std::process::Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_binary_serves_logs_each_request_and_stops_cleanly_on_sigterm() {
    let upstream = MockUpstream::ok(r#"{"ok":true}"#).await;
    let (https, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        &format!("  backend: {{ url: \"{}\" }}", upstream.url()),
        "  - { path: /api/**, upstream: backend, auth: none }",
        "",
    )
    .replace(
        "127.0.0.1:0\"\n  admin: \"127.0.0.1:0\"",
        &format!("127.0.0.1:{https}\"\n  admin: \"127.0.0.1:{admin}\""),
    )
    .replace("  requests: false", "  requests: true\n  format: json");
    let file = dir.path().join("gateway.yaml");
    std::fs::write(&file, config).unwrap();
    let mut child = Reaped(Some(
        Command::new(env!("CARGO_BIN_EXE_wardgate"))
            .args(["run", "--config"])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let pid = child.0.as_ref().unwrap().id();

    let admin_client = plain_client();
    let mut healthy = false;
    for _ in 0..200 {
        if let Ok(response) = admin_client
            .request(get(&format!("http://127.0.0.1:{admin}/healthz")))
            .await
        {
            healthy = response.status() == StatusCode::OK;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(healthy, "the gateway did not come up");

    // Accounts are managed through the running gateway.
    let cli = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_wardgate"))
            .args(args)
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, added, errors) = cli(&[
        "user",
        "add",
        "bob",
        "--role",
        "nurse",
        "--email",
        "bob@example.org",
    ]);
    assert_eq!(code, Some(0), "{errors}");
    let added: serde_json::Value = serde_json::from_str(&added).unwrap();
    assert_eq!(added["user"]["name"], "bob");
    assert_eq!(added["enrollment"]["token"].as_str().unwrap().len(), 64);
    let (code, listed, _) = cli(&["user", "list"]);
    assert_eq!(code, Some(0));
    assert!(listed.contains("\"bob\""), "{listed}");
    let (code, _, errors) = cli(&["user", "show", "nobody"]);
    assert_eq!(code, Some(1));
    assert!(errors.contains("WG-ADMIN-004"), "{errors}");

    let config = client_tls(&dir.path().join("gateway.crt"));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, TestBody>(connector);
    let response = client
        .request(get(&format!(
            "https://localhost:{https}/api/patients/7?secret=token123"
        )))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(body_text(response).await, r#"{"ok":true}"#);
    let missing = client
        .request(get(&format!("https://localhost:{https}/nothing/../here")))
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    drop(client);

    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let mut child = child.0.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines: Vec<String> = BufReader::new(stdout).lines().map(|l| l.unwrap()).collect();
        (child.wait().unwrap(), lines)
    });
    let (exit, lines) = tokio::time::timeout(Duration::from_secs(30), exit)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{lines:#?}");

    let records: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "wardgate::request")
        .collect();
    assert_eq!(records.len(), 2, "{lines:#?}");
    let ok = &records[0];
    assert_eq!(ok["request_id"], request_id.as_str());
    assert_eq!(ok["client"], "127.0.0.1");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/api/patients/7");
    assert_eq!(ok["route"], "/api/**");
    assert_eq!(ok["upstream"], "backend");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["bytes"], 11);
    assert_eq!(ok["code"], "");
    assert_eq!(ok["complete"], true);
    assert!(ok["duration_us"].as_u64().is_some());
    assert!(ok["timestamp"].is_string());
    let refused = &records[1];
    assert_eq!(refused["path"], "/nothing/../here");
    assert_eq!(refused["status"], 400);
    assert_eq!(refused["code"], "WG-PATH-005");
    let all = lines.join("\n");
    assert!(
        !all.contains("token123"),
        "the query string reached the log"
    );
    assert!(
        all.contains("dev_self_signed"),
        "the weak-setting warning is missing"
    );
}
