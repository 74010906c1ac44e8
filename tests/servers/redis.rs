//! A private Redis server for one test: its own port on 127.0.0.1 and its own directory, with
//! every write in its append-only file before it answers (so a server killed and started again
//! still holds its sessions, as a production Redis with `appendfsync always` would), stopped
//! when dropped. `scripts/server-deps.sh` installs `redis-server`; a test
//! that needs one and finds none fails and says so, it never passes without one.

// Included by the unit tests and the integration tests, each using a part of it.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

pub struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    server: Mutex<Option<Child>>,
    /// Serves TLS only (`rediss://`), with the certificate and key files in its directory.
    tls: bool,
}

impl PrivateRedis {
    pub fn start() -> Self {
        Self::starting(None)
    }

    /// A server that speaks only TLS, with this certificate chain and key (PEM), for the name
    /// `localhost`.
    pub fn start_tls(cert: &str, key: &str) -> Self {
        Self::starting(Some((cert, key)))
    }

    fn starting(tls: Option<(&str, &str)>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("a temporary directory");
        if let Some((cert, key)) = tls {
            std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
            std::fs::write(dir.path().join("tls.key"), key).unwrap();
        }
        let redis = Self {
            port,
            dir,
            server: Mutex::new(None),
            tls: tls.is_some(),
        };
        redis.start_again();
        redis
    }

    pub fn url(&self) -> String {
        match self.tls {
            true => format!("rediss://localhost:{}/", self.port),
            false => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// The listening arguments: a plain port, or a TLS port and no plain one.
    fn listen(&self) -> Vec<String> {
        let port = self.port.to_string();
        if !self.tls {
            return vec!["--port".into(), port];
        }
        let file = |name: &str| self.dir.path().join(name).display().to_string();
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port,
            "--tls-cert-file".into(),
            file("tls.crt"),
            "--tls-key-file".into(),
            file("tls.key"),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
    }

    /// Starts the server again on the same port (after [`PrivateRedis::stop`]).
    pub fn start_again(&self) {
        let child = Command::new("redis-server")
            .args(self.listen())
            .args(["--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("redis-server did not start ({error}): run scripts/server-deps.sh")
            });
        *self.server.lock().unwrap() = Some(child);
        wait_for(self.port, self.dir.path());
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers, as with a
    /// Redis stuck on a slow disk or a network that drops packets.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.server.lock().unwrap().as_ref().map(Child::id);
        let pid = pid.expect("the server runs").to_string();
        let sent = Command::new("kill").args([signal, &pid]).status();
        assert!(
            sent.is_ok_and(|status| status.success()),
            "kill {signal} {pid}"
        );
    }

    /// Stops the server at once, as a crash or a lost network would.
    pub fn stop(&self) {
        if let Some(mut child) = self.server.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_for(port: u16, dir: &Path) {
    for _ in 0..500 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "redis-server on port {port} (dir {}) did not answer within 10 s",
        dir.display()
    );
}
