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

/// An HTTP/1.1 client over TLS that trusts `cert`.
fn https_client(
    cert: &std::path::Path,
) -> hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    TestBody,
> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_tls(cert))
        .https_only()
        .enable_http1()
        .build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

/// A started `wardgate run`: its log lines as they come, and the addresses it got.
struct Running {
    child: Reaped,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    log: Vec<String>,
    /// The log record "wardgate is serving", which names every listener's address.
    serving: serde_json::Value,
}

impl Running {
    /// Spawns `command` (its listeners on port 0, so no port is ever reserved and released)
    /// and waits until the gateway logs the addresses it is serving on.
    async fn start(mut command: Command) -> Self {
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut log = Vec::new();
        let serving = loop {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.recv())
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("the gateway stopped: {log:#?}"));
            log.push(line.clone());
            let record: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if record["message"] == "wardgate is serving" {
                break record;
            }
        };
        Self {
            child: Reaped(Some(child)),
            lines,
            log,
            serving,
        }
    }

    fn addr(&self, listener: &str) -> std::net::SocketAddr {
        self.serving[listener].as_str().unwrap().parse().unwrap()
    }

    fn pid(&self) -> u32 {
        self.child.0.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits for the exit: its status and the whole log.
    async fn stop(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(30), self.lines.recv()).await
        {
            self.log.push(line);
        }
        let mut child = self.child.0.take().unwrap();
        let exit = tokio::task::spawn_blocking(move || child.wait().unwrap());
        let exit = tokio::time::timeout(Duration::from_secs(30), exit)
            .await
            .unwrap()
            .unwrap();
        (exit, self.log)
    }
}

/// `wardgate run --config file`.
fn wardgate_run(file: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wardgate"));
    command
        .args(["run", "--config"])
        .arg(file)
        .stderr(Stdio::null());
    command
}

#[tokio::test]
async fn the_binary_serves_logs_each_request_and_stops_cleanly_on_sigterm() {
    let upstream = MockUpstream::ok(r#"{"ok":true}"#).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        &format!("  backend: {{ url: \"{}\" }}", upstream.url()),
        "  - { path: /api/**, upstream: backend, auth: none }",
        "",
    )
    .replace("  requests: false", "  requests: true\n  format: json");
    let file = dir.path().join("gateway.yaml");
    std::fs::write(&file, &config).unwrap();
    let running = Running::start(wardgate_run(&file)).await;
    let https = running.addr("https").port();
    // The commands find the admin listener in their config: the same one, naming its port.
    let cli_file = dir.path().join("cli.yaml");
    let admin = running.addr("admin");
    std::fs::write(
        &cli_file,
        config.replace("admin: \"127.0.0.1:0\"", &format!("admin: \"{admin}\"")),
    )
    .unwrap();

    // Accounts are managed through the running gateway.
    let cli = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_wardgate"))
            .args(args)
            .arg("--config")
            .arg(&cli_file)
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

    let client = https_client(&dir.path().join("gateway.crt"));
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

    let (exit, lines) = running.stop().await;
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

/// `wardgate run --config config` started by `prlimit` with the open-file limit `soft:hard`.
fn limited(config: &std::path::Path, nofile: &str) -> Command {
    let mut command = Command::new("prlimit");
    command
        .arg(format!("--nofile={nofile}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_wardgate"))
        .args(["run", "--config"])
        .arg(config)
        .stderr(Stdio::null());
    command
}

/// A config for the file-limit tests: every listener on a port of the kernel's choosing.
fn limited_config(dir: &std::path::Path, upstream: &str, server: &str) -> std::path::PathBuf {
    let config = format!("{}server:\n{server}", simple_config(upstream)).replace(
        "  admin: \"127.0.0.1:0\"",
        "  admin: \"127.0.0.1:0\"\n  http_redirect: \"127.0.0.1:0\"",
    );
    let file = dir.join("gateway.yaml");
    std::fs::write(&file, config).unwrap();
    file
}

#[tokio::test]
async fn an_open_file_limit_below_what_the_server_limits_need_stops_the_start() {
    let upstream = MockUpstream::ok("ok").await;
    let dir = tempfile::tempdir().unwrap();
    let file = limited_config(dir.path(), &upstream.url(), "  max_connections: 1000\n");
    let mut command = limited(&file, "256:256");
    let output = tokio::task::spawn_blocking(move || command.output());
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains("RLIMIT_NOFILE") && log.contains("need 2256"),
        "{log}"
    );
}

#[tokio::test]
async fn the_soft_file_limit_is_raised_and_idle_plain_http_clients_cannot_exhaust_it() {
    let upstream = MockUpstream::ok("ok").await;
    let dir = tempfile::tempdir().unwrap();
    // 2 x 4 + 3 x 4 + 64 = 84 descriptors needed; the soft limit of 64 is raised to 100.
    let file = limited_config(
        dir.path(),
        &upstream.url(),
        "  max_connections: 4\n  side_max_connections: 4\n",
    );
    let running = Running::start(limited(&file, "64:100")).await;
    let pid = running.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        open_files.split_whitespace().collect::<Vec<_>>()[3..5],
        ["100", "100"],
        "{open_files}"
    );
    // 80 idle clients on the plain-HTTP listeners, more than the whole descriptor limit
    // allows: they wait in the backlog instead of taking descriptors.
    let mut idle = Vec::new();
    for listener in ["admin", "redirect"] {
        for _ in 0..40 {
            idle.push(
                tokio::net::TcpStream::connect(running.addr(listener))
                    .await
                    .unwrap(),
            );
        }
    }
    let https = running.addr("https");
    let client = https_client(&dir.path().join("gateway.crt"));
    let response = client
        .request(get(&format!("https://localhost:{}/x", https.port())))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop((idle, client));
    let (_, log) = running.stop().await;
    let log = log.join("\n");
    assert!(log.contains("raised the open-file limit"), "{log}");
    assert!(!log.contains("accept failed"), "{log}");
}
