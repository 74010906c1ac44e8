//! `wardgate care-team …`, `wardgate grants …`, `wardgate break-glass …`: the access policy's
//! relations, managed through the running gateway's admin listener (`admin/relations.rs`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::Bytes;
use clap::Subcommand;
use http::Method;
use serde_json::json;

use crate::cli_user::run_call;

#[derive(Debug, Subcommand)]
pub enum CareTeamCommand {
    /// Put a user on a patient's care team (until a unix time, if given).
    Add {
        user: String,
        patient: String,
        #[arg(long)]
        until: Option<u64>,
    },
    /// Take a user off a patient's care team.
    Remove { user: String, patient: String },
    /// Every link, or one user's.
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Add the links of a JSON-lines file (`-`: standard input), all or none:
    /// `{"user":"dana","patient":"p7","until":1800000000}` per line.
    Import { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum GrantsCommand {
    /// Every access request and grant, with its status.
    List,
    /// End a pending request or an active grant.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum BreakGlassCommand {
    /// The break-glass uses waiting for review; with an id, review that one in the name of
    /// `--reviewer` (a role with `review: true`, not the person who opened it).
    Review {
        id: Option<String>,
        #[arg(long)]
        reviewer: Option<String>,
        /// `appropriate` or `inappropriate`.
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long, default_value = "")]
        comment: String,
    },
}

fn json_body(value: serde_json::Value) -> Bytes {
    Bytes::from(value.to_string())
}

pub fn care_team(file: &Path, command: &CareTeamCommand) -> ExitCode {
    let (method, path, body) = match command {
        CareTeamCommand::Add {
            user,
            patient,
            until,
        } => (
            Method::POST,
            "/admin/care-team".to_owned(),
            json_body(json!({ "user": user, "patient": patient, "until": until })),
        ),
        CareTeamCommand::Remove { user, patient } => (
            Method::DELETE,
            format!("/admin/care-team/{user}/{patient}"),
            Bytes::new(),
        ),
        CareTeamCommand::List { user } => {
            let query = user
                .as_ref()
                .map(|u| format!("?user={u}"))
                .unwrap_or_default();
            (
                Method::GET,
                format!("/admin/care-team{query}"),
                Bytes::new(),
            )
        }
        CareTeamCommand::Import { file: list } => {
            let mut lines = Vec::new();
            let read = if list.as_os_str() == "-" {
                std::io::stdin().read_to_end(&mut lines).map(|_| ())
            } else {
                std::fs::read(list).map(|bytes| lines = bytes)
            };
            if let Err(error) = read {
                eprintln!("error: {}: {error}", list.display());
                return ExitCode::FAILURE;
            }
            (
                Method::POST,
                "/admin/care-team/import".to_owned(),
                Bytes::from(lines),
            )
        }
    };
    run_call(file, method, &path, body)
}

pub fn grants(file: &Path, command: &GrantsCommand) -> ExitCode {
    match command {
        GrantsCommand::List => run_call(file, Method::GET, "/admin/grants", Bytes::new()),
        GrantsCommand::Revoke { id } => {
            let path = format!("/admin/grants/{id}/revoke");
            run_call(file, Method::POST, &path, Bytes::new())
        }
    }
}

pub fn break_glass(file: &Path, command: &BreakGlassCommand) -> ExitCode {
    let BreakGlassCommand::Review {
        id,
        reviewer,
        outcome,
        comment,
    } = command;
    match (id, reviewer, outcome) {
        (None, _, _) => run_call(file, Method::GET, "/admin/break-glass", Bytes::new()),
        (Some(id), Some(reviewer), Some(outcome)) => {
            let body = json!({ "reviewer": reviewer, "outcome": outcome, "comment": comment });
            let path = format!("/admin/break-glass/{id}/review");
            run_call(file, Method::POST, &path, json_body(body))
        }
        (Some(_), _, _) => {
            eprintln!(
                "error: a review needs --reviewer and --outcome (appropriate or inappropriate)"
            );
            ExitCode::FAILURE
        }
    }
}
