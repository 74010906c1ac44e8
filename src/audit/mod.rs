//! The audit trail: every decision and security event, tamper-evident, in its own store.
//!
//! **The threat.** An insider reads a patient's record and nobody can tell; an attacker who owns
//! the gateway host edits or removes the lines that show what they did; a copy of the audit
//! directory lists who was treated for what.
//!
//! **The rule.** Records are appended to their own store ([`trail`]), apart from the identity
//! store, under their own key: each is sealed (a copy reveals no patient), chained to the one
//! before and covered by a Merkle tree whose root is signed in a checkpoint every few records
//! or seconds, also copied to files elsewhere; [`trail::verify`] names the first record that was
//! changed, removed, added, moved or cut.
//!
//! **The standard.** HIPAA 164.312(b) (audit controls) and 164.312(c)(1) (integrity); RFC 6962
//! and RFC 9162 (Merkle tree hashing, signed tree heads, inclusion proofs).

pub mod export;
pub mod merkle;
pub mod sink;
pub mod trail;

use serde::{Deserialize, Serialize};

/// One record of the trail: a request's decision before it was forwarded (`decision`), how a
/// request ended (`request`), a security event (`security`: its name and fields). Never a
/// secret, a token or a body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    pub kind: String,
    /// Unix seconds.
    pub time: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The normalized path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// `allowed`, `refused` or `failed` (the upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// The refusal's stable code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose_of_use: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// False when the answer was cut short (the client left, the upstream broke off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
    /// A security event's name (`login_failed`, `access_changed`…) and its fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<serde_json::Value>,
}
