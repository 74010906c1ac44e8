//! `wardgate user …`: account management through the running gateway's admin listener, and the
//! admin API client the other management commands share (`cli_relations.rs`).
//!
//! The gateway is the only process that writes its identity store (redb holds a file lock), so
//! the command is a small HTTP client of `listen.admin`, authenticated by the admin token that the
//! gateway keeps in `<store.path>/admin.token` (readable by its owner only).

use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Subcommand;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::config;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account; prints its one-time enrollment token.
    Add {
        name: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// List accounts.
    List,
    /// Show one account.
    Show {
        name: String,
    },
    /// Refuse the account from now on.
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    /// Replace the account's roles.
    SetRoles {
        name: String,
        roles: Vec<String>,
    },
    /// Remove every second factor; prints a new one-time enrollment token to set them up again.
    ResetMfa {
        name: String,
    },
    /// Remove the password; prints a new one-time enrollment token.
    ResetPassword {
        name: String,
    },
}

impl UserCommand {
    /// The admin API call: method, path below `/admin/users`, JSON body.
    fn request(&self) -> (Method, String, Option<Value>) {
        match self {
            UserCommand::Add { name, email, roles } => (
                Method::POST,
                String::new(),
                Some(json!({ "name": name, "email": email, "roles": roles })),
            ),
            UserCommand::List => (Method::GET, String::new(), None),
            UserCommand::Show { name } => (Method::GET, format!("/{name}"), None),
            UserCommand::Disable { name } => (Method::POST, format!("/{name}/disable"), None),
            UserCommand::Enable { name } => (Method::POST, format!("/{name}/enable"), None),
            UserCommand::SetRoles { name, roles } => (
                Method::PUT,
                format!("/{name}/roles"),
                Some(json!({ "roles": roles })),
            ),
            UserCommand::ResetMfa { name } => (Method::POST, format!("/{name}/reset-mfa"), None),
            UserCommand::ResetPassword { name } => {
                (Method::POST, format!("/{name}/reset-password"), None)
            }
        }
    }
}

/// Runs one `wardgate user` command against the gateway configured in `file`.
pub fn run(file: &Path, command: &UserCommand) -> ExitCode {
    let (method, path, body) = command.request();
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    run_call(file, method, &format!("/admin/users{path}"), body)
}

/// Sends one admin API call (`path` from `/admin/`) to the gateway configured in `file` and
/// prints its answer: the one client of every `wardgate` command that manages the running
/// gateway.
pub fn run_call(file: &Path, method: Method, path: &str, body: Bytes) -> ExitCode {
    match call(file, method, path, body) {
        Ok(answer) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&answer).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn call(file: &Path, method: Method, path: &str, body: Bytes) -> Result<Value, String> {
    let loaded = config::load(file).map_err(|e| e.to_string())?;
    let admin = loaded
        .config
        .listen
        .admin
        .as_ref()
        .ok_or(
            "the config has no admin listener (listen.admin): account management goes through it",
        )?
        .value;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let token = admin_token(&loaded).await?;
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{admin}{path}"))
            .header(header::AUTHORIZATION, format!("Bearer {}", token.trim()))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let client =
            Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(HttpConnector::new());
        let response = client.request(request).await.map_err(|_| {
            format!("cannot reach the gateway's admin listener at {admin}: is it running?")
        })?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let answer: Value =
            serde_json::from_slice(&bytes).map_err(|_| format!("unexpected answer ({status})"))?;
        if status.is_success() {
            Ok(answer)
        } else {
            Err(format!(
                "{} ({})",
                answer["message"].as_str().unwrap_or("refused"),
                answer["error"].as_str().unwrap_or("")
            ))
        }
    })
}

/// The token of the admin listener: in PostgreSQL when the replicas keep their store there,
/// else in the data directory, where the running gateway wrote it.
async fn admin_token(loaded: &config::Loaded) -> Result<String, String> {
    #[cfg(feature = "postgres")]
    if matches!(loaded.config.store.kind, config::StoreKind::Postgres) {
        let token = crate::server::shared_admin_token(loaded).await;
        return token
            .map(|token| token.expose().to_owned())
            .map_err(|e| e.to_string());
    }
    let token_file = crate::store::keys::token_path(&loaded.resolve(&loaded.config.store.path));
    std::fs::read_to_string(&token_file).map_err(|e| {
        format!(
            "{}: {e} (is the gateway running with this config?)",
            token_file.display()
        )
    })
}
