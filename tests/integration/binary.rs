//! The real `wardgate` binary: start, serve, log one JSON record per request, exit 0 on SIGTERM,
//! and keep its sessions across a restart.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::enrollment::{STRONG, post};
use crate::harness::*;
use crate::sessions::{LOGIN, call, enroll, next_code, post_as};

/// How long to wait for each log line and for the exit: far more than a start or a stop takes.
const PATIENCE: Duration = Duration::from_secs(30);

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

/// `wardgate run` on `config`.
fn run(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wardgate"));
    command.args(["run", "--config"]).arg(config);
    command
}

/// A running `wardgate run`, its log (JSON records on stdout) read line by line as it is
/// written.
pub(crate) struct Binary {
    child: Reaped,
    lines: UnboundedReceiver<String>,
    /// Every line logged so far.
    log: Vec<String>,
    /// The "wardgate is serving" record: the addresses it bound.
    serving: Value,
    /// The directory of its config file: certificate and data.
    dir: PathBuf,
}

impl Binary {
    /// Writes `config` to `dir/gateway.yaml`, starts the gateway on it and waits until it
    /// serves. Started again in the same `dir`, it finds its certificate and data there.
    pub(crate) async fn start(dir: &Path, config: &str) -> Self {
        let file = dir.join("gateway.yaml");
        std::fs::write(&file, config).unwrap();
        Self::spawn(run(&file), dir).await
    }

    /// Spawns `command` (a `wardgate run` for a config in `dir`, with the log filter of the
    /// config, whatever `RUST_LOG` the tests run with) and waits until it serves.
    async fn spawn(mut command: Command, dir: &Path) -> Self {
        let mut child = command
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut binary = Self {
            child: Reaped(Some(child)),
            lines,
            log: Vec::new(),
            serving: Value::Null,
            dir: dir.to_owned(),
        };
        binary.serving = loop {
            let line = tokio::time::timeout(PATIENCE, binary.lines.recv())
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("the gateway stopped: {:#?}", binary.log));
            binary.log.push(line.clone());
            let record: Value = serde_json::from_str(&line).unwrap_or_default();
            if record["message"] == "wardgate is serving" {
                break record;
            }
        };
        binary
    }

    fn pid(&self) -> u32 {
        self.child.0.as_ref().unwrap().id()
    }

    /// A listener's address from the "wardgate is serving" record: `https`, `admin` or
    /// `redirect`.
    pub(crate) fn addr(&self, listener: &str) -> SocketAddr {
        self.serving[listener].as_str().unwrap().parse().unwrap()
    }

    /// Kills the process with SIGKILL: no drain, no flush, nothing it could still do.
    pub(crate) fn kill(mut self) {
        let mut child = self.child.0.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends SIGTERM, waits for the exit (status 0) and returns every line the gateway logged.
    pub(crate) async fn stop(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        // The log ends when the process does.
        while let Some(line) = tokio::time::timeout(PATIENCE, self.lines.recv())
            .await
            .unwrap()
        {
            self.log.push(line);
        }
        let mut child = self.child.0.take().unwrap();
        let exit = tokio::time::timeout(
            PATIENCE,
            tokio::task::spawn_blocking(move || child.wait().unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(exit.code(), Some(0), "{:#?}", self.log);
        self.log
    }
}

impl Listening for Binary {
    fn https_port(&self) -> u16 {
        self.addr("https").port()
    }

    fn admin_addr(&self) -> SocketAddr {
        self.addr("admin")
    }

    fn dir_path(&self) -> &Path {
        &self.dir
    }
}

#[tokio::test]
async fn the_binary_serves_logs_each_request_and_stops_cleanly_on_sigterm() {
    let upstream = MockUpstream::ok(r#"{"ok":true}"#).await;
    // A port this test holds without listening on it: connections to it are refused.
    let down = tokio::net::TcpSocket::new_v4().unwrap();
    down.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        &format!(
            "  backend: {{ url: \"{}\" }}\n  down: {{ url: \"http://{}\" }}",
            upstream.url(),
            down.local_addr().unwrap()
        ),
        "  - { path: /api/**, upstream: backend, auth: none }\n  - { path: /down/**, upstream: down, auth: none }",
        "",
    )
    .replace("  requests: false", "  requests: true\n  format: json");
    // Every listener on a port of the kernel's choosing, read from the log: none is reserved
    // and released first. The commands find the admin listener in their config, so theirs
    // names the port the gateway got.
    let binary = Binary::start(dir.path(), &config).await;
    let file = dir.path().join("cli.yaml");
    let admin = binary.addr("admin");
    std::fs::write(
        &file,
        config.replace("admin: \"127.0.0.1:0\"", &format!("admin: \"{admin}\"")),
    )
    .unwrap();

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

    let client = binary.client(false);
    let response = client
        .request(get(&binary.url("/api/patients/7?secret=token123")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(body_text(response).await, r#"{"ok":true}"#);
    let missing = client
        .request(get(&binary.url("/nothing/../here")))
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    let failed = client.request(get(&binary.url("/down/x"))).await.unwrap();
    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
    let failed_id = failed.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let answer = body_text(failed).await;
    assert!(
        !answer.contains("refused"),
        "the cause reached the client: {answer}"
    );
    drop(client);

    let lines = binary.stop().await;

    let records: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "wardgate::request")
        .collect();
    assert_eq!(records.len(), 3, "{lines:#?}");
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
    // The client got the fixed 502; the log says why, under the request's id.
    let cause = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| {
            v["request_id"] == failed_id.as_str()
                && v["code"] == "WG-UP-001"
                && v["cause"].is_string()
        })
        .unwrap_or_else(|| panic!("no cause logged for {failed_id}: {lines:#?}"));
    assert_eq!(cause["level"], "ERROR");
    let cause = cause["cause"].as_str().unwrap();
    assert!(cause.starts_with("upstream down: "), "{cause}");
    assert!(cause.contains("Connection refused"), "{cause}");
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

/// `wardgate run` on `config`, started by `prlimit` with the open-file limit `soft:hard`.
fn limited(config: &Path, nofile: &str) -> Command {
    let mut command = Command::new("prlimit");
    command
        .arg(format!("--nofile={nofile}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_wardgate"))
        .args(["run", "--config"])
        .arg(config);
    command
}

/// A config for the file-limit tests: every listener on a port of the kernel's choosing.
fn limited_config(dir: &Path, upstream: &str, server: &str) -> PathBuf {
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
    let child = limited(&file, "256:256")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output());
    let output = tokio::time::timeout(PATIENCE, output)
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
    let binary = Binary::spawn(limited(&file, "64:100"), dir.path()).await;
    let pid = binary.pid();
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
                tokio::net::TcpStream::connect(binary.addr(listener))
                    .await
                    .unwrap(),
            );
        }
    }
    let response = binary
        .client(false)
        .request(get(&binary.url("/x")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(idle);
    let log = binary.stop().await.join("\n");
    assert!(log.contains("raised the open-file limit"), "{log}");
    assert!(!log.contains("accept failed"), "{log}");
}

#[tokio::test]
async fn sessions_survive_a_restart_and_a_logged_out_one_stays_refused() {
    let upstream = MockUpstream::recording().await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::sessions::config(&upstream.url());
    let binary = Binary::start(dir.path(), &config).await;
    let (secret, codes) = enroll(&binary, "alice").await;
    let log_in = |path: &'static str, code: String| {
        let binary = &binary;
        async move {
            let started = post(
                binary,
                LOGIN,
                json!({ "user": "alice", "password": STRONG }),
            )
            .await;
            let challenge = started.body["challenge"].clone();
            let done = post(
                binary,
                path,
                json!({ "challenge": challenge, "code": code }),
            )
            .await;
            assert_eq!(done.status, StatusCode::OK, "{}", done.body);
            done.body["token"].as_str().unwrap().to_owned()
        }
    };
    let kept = log_in("/.wardgate/api/login/totp", next_code(&secret)).await;
    let ended = log_in("/.wardgate/api/login/recovery", codes[0].clone()).await;
    let logout = post_as(&binary, "/.wardgate/api/logout", &ended, json!({})).await;
    assert_eq!(logout.body["ended"], 1, "{}", logout.body);
    assert_eq!(
        call(&binary, "/api/records/1", Some(&kept), &[]).await.0,
        StatusCode::OK
    );
    binary.stop().await;

    // A new process on the same data directory and config: nothing of the old one in memory.
    // It logs its requests, each with the user of the session it carried.
    let logged = config.replace("  requests: false", "  requests: true\n  format: json");
    let binary = Binary::start(dir.path(), &logged).await;
    let (status, _, body) = call(&binary, "/api/records/1", Some(&kept), &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "recorded"));
    let (status, _, body) = call(&binary, "/api/records/1", Some(&ended), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let refused: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(refused["error"], "WG-SESSION-001", "{body}");
    let lines = binary.stop().await;
    let seen = upstream.seen();
    let users: Vec<_> = seen
        .iter()
        .map(|seen| seen.headers["x-wardgate-user"].clone())
        .collect();
    assert_eq!(users, ["alice", "alice"]);
    let records: Vec<Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|record| record["target"] == "wardgate::request")
        .collect();
    let logged: Vec<(&Value, &Value)> = records
        .iter()
        .map(|record| (&record["status"], &record["user"]))
        .collect();
    let id = seen[1].headers["x-wardgate-user-id"].to_str().unwrap();
    assert_eq!(
        logged,
        [(&json!(200), &json!(id)), (&json!(401), &json!(""))]
    );
}
