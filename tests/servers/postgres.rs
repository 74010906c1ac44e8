//! A private PostgreSQL server for tests: its own data directory in a temporary directory, its
//! own port on 127.0.0.1, a unix socket inside that directory, and nothing shared with a system
//! server. Dropping it stops the server and removes the directory.
//!
//! Self-contained (std and `tempfile` only), so that both the unit tests (`#[path]`) and the
//! integration tests can include it. The server binaries come from Debian's `postgresql`
//! package; without them the helper panics and names the script that installs them: a test
//! that needs PostgreSQL never skips silently. `initdb` refuses to run as root, so under root
//! the server commands run as the package's `postgres` user, in a directory it owns.
//!
//! Local (socket) connections are trusted, for the helper's own `createdb`; TCP connections
//! need the password (SCRAM-SHA-256), so tests exercise the same authentication a deployment
//! uses.

// Included by the unit tests and the integration tests, each using a part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Where Debian's `postgresql-NN` packages put the server binaries.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Run the server commands as `postgres` (we are root).
    as_postgres: bool,
}

impl PrivatePostgres {
    /// The superuser the tests connect as.
    pub const USER: &'static str = "wardgate";
    /// Its password (SCRAM over TCP).
    pub const PASSWORD: &'static str = "test-only-password";
    /// The database created for the tests.
    pub const DATABASE: &'static str = "wardgate";

    /// Creates a cluster, starts it and creates [`Self::DATABASE`].
    pub fn start() -> Self {
        let bin = server_binaries();
        let as_postgres = running_as_root();
        let dir = tempfile::tempdir().expect("a temporary directory");
        if as_postgres {
            let (uid, gid) = postgres_user();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the server directory to postgres");
        }
        let server = Self {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        let password_file = server.dir.path().join("password");
        std::fs::write(&password_file, Self::PASSWORD).expect("write the password file");
        if as_postgres {
            let (uid, gid) = postgres_user();
            std::os::unix::fs::chown(&password_file, Some(uid), Some(gid))
                .expect("chown the password file");
        }
        server.run(
            "initdb",
            &[
                "--pgdata",
                &server.data().display().to_string(),
                "--username",
                Self::USER,
                "--pwfile",
                &password_file.display().to_string(),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-instructions",
            ],
        );
        server.start_again();
        server.create_database(Self::DATABASE);
        server
    }

    /// Creates another database, `name`, beside [`Self::DATABASE`].
    pub fn create_database(&self, name: &str) {
        self.run(
            "createdb",
            &[
                "--host",
                &self.dir.path().display().to_string(),
                "--port",
                &self.port.to_string(),
                "--username",
                Self::USER,
                name,
            ],
        );
    }

    /// The URL of database `name`, without the password.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://{}@127.0.0.1:{}/{name}", Self::USER, self.port)
    }

    /// A URL with the user and its password, for [`Self::DATABASE`] over TCP.
    pub fn url(&self) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            Self::USER,
            Self::PASSWORD,
            self.port,
            Self::DATABASE
        )
    }

    /// The same URL without the password, for a caller that hands the password over apart.
    pub fn url_without_password(&self) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            Self::USER,
            self.port,
            Self::DATABASE
        )
    }

    /// Stops the server at once (no shutdown checkpoint), as a crash or a cut cable would look
    /// to a client: connections drop, new ones are refused.
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "immediate"]);
    }

    /// Starts the server (again) on the same port with the same data.
    pub fn start_again(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.pg_ctl(&["start", "-w", "-l", &log, "-o", &options]);
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data().display().to_string();
        let mut all = vec!["-D", data.as_str()];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all);
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self.command(program, args).output();
        match output {
            Ok(Output { status, .. }) if status.success() => {}
            Ok(Output { stdout, stderr, .. }) => panic!(
                "{program} {args:?} failed:\n{}{}\nserver log:\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr),
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            ),
            Err(error) => panic!("{program}: {error}"),
        }
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.args(args).current_dir(self.dir.path());
        command
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Best effort: the server may be stopped already; the directory goes with `dir`.
        let _ = self
            .command(
                "pg_ctl",
                &[
                    "-D",
                    &self.data().display().to_string(),
                    "stop",
                    "-m",
                    "immediate",
                ],
            )
            .output();
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that holds `initdb`.
fn server_binaries() -> PathBuf {
    let newest = std::fs::read_dir(DEBIAN_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server binaries under {DEBIAN_ROOT}/*/bin: run scripts/server-deps.sh"
        ),
    }
}

fn running_as_root() -> bool {
    let output = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

/// The uid and gid of the `postgres` user that Debian's package creates.
fn postgres_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no `postgres` user: run scripts/server-deps.sh"))
    };
    (id("-u"), id("-g"))
}

/// A port nobody listens on now (the kernel's pick; free again once the probe is dropped).
fn free_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
    probe.local_addr().expect("the probe's address").port()
}
