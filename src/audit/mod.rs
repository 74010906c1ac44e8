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

pub mod backend;
pub mod export;
pub mod merkle;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sink;
pub mod trail;

use std::path::Path;

use rand::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::identity::KeyError;

/// Puts a new current key into the audit key file (`wardgate keys rotate`): records written
/// from the next start on are sealed under it. Records already written stay sealed under the
/// keys they were written with (the chain and the signed checkpoints cover their sealed bytes,
/// so they are never sealed again), and those keys stay in the file until retention has removed
/// the last of their records. Returns the new key's id and the older ones.
pub fn rotate_key<R: CryptoRng + ?Sized>(
    key_file: &Path,
    rng: &mut R,
) -> Result<(u32, Vec<u32>), KeyError> {
    let (keyring, id, older) = crate::identity::with_new_key(key_file, rng)?;
    keyring.replace_file(key_file)?;
    Ok((id, older))
}

/// Which records a query keeps: each filter given must match (`wardgate audit query`,
/// `GET /admin/audit`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub patient: Option<String>,
    /// An account id.
    pub user: Option<String>,
    pub category: Option<String>,
    /// A grant's (or break-glass access's) id.
    pub grant: Option<String>,
    pub decision: Option<String>,
    pub kind: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<u64>,
    pub until: Option<u64>,
}

impl Query {
    /// The query of a URL's parameters (the names of the fields); `None` for an unknown name,
    /// a repeated one or a time that is not a number.
    pub fn from_pairs(pairs: impl Iterator<Item = (String, String)>) -> Option<Self> {
        let mut query = Query::default();
        for (name, value) in pairs.filter(|(name, _)| !name.is_empty()) {
            let slot = match name.as_str() {
                "patient" => &mut query.patient,
                "user" => &mut query.user,
                "category" => &mut query.category,
                "grant" => &mut query.grant,
                "decision" => &mut query.decision,
                "kind" => &mut query.kind,
                "since" | "until" => {
                    let time: u64 = value.parse().ok()?;
                    let slot = match name.as_str() {
                        "since" => &mut query.since,
                        _ => &mut query.until,
                    };
                    if slot.replace(time).is_some() {
                        return None;
                    }
                    continue;
                }
                _ => return None,
            };
            if slot.replace(value).is_some() {
                return None;
            }
        }
        Some(query)
    }

    pub fn keeps(&self, record: &AuditRecord) -> bool {
        let is = |wanted: &Option<String>, found: &Option<String>| {
            wanted.as_ref().is_none_or(|w| found.as_ref() == Some(w))
        };
        let holds = |wanted: &Option<String>, found: &[String]| {
            wanted.as_ref().is_none_or(|w| found.contains(w))
        };
        is(&self.patient, &record.patient)
            && is(&self.user, &record.user)
            && is(&self.decision, &record.decision)
            && self.kind.as_ref().is_none_or(|k| record.kind == *k)
            && holds(&self.category, &record.categories)
            && holds(&self.grant, &record.grants)
            && self.since.is_none_or(|t| record.time >= t)
            && self.until.is_none_or(|t| record.time <= t)
    }
}

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
    /// On the end (`request`) record of a request whose decision was recorded: that record's
    /// sequence number. Such an end record does not repeat the decision's fields (who, which
    /// patient and route, on what basis); [`Reader::read`] puts them back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_in: Option<u64>,
}

/// Reads records in trail order, giving each end record that names its decision record
/// (`decided_in`) the fields it left to it: what a query filters on and shows.
#[derive(Default)]
pub struct Reader {
    /// Decision records whose end record has not been read yet.
    decisions: std::collections::HashMap<u64, AuditRecord>,
}

impl Reader {
    /// The record at `seq`, whole.
    pub fn read(&mut self, seq: u64, mut record: AuditRecord) -> AuditRecord {
        if record.kind == "decision" {
            self.decisions.insert(seq, record.clone());
        } else if let Some(decision) = record.decided_in.and_then(|d| self.decisions.remove(&d)) {
            record = AuditRecord {
                client: decision.client,
                user: decision.user,
                roles: decision.roles,
                route: decision.route,
                method: decision.method,
                path: decision.path,
                patient: decision.patient,
                categories: decision.categories,
                purpose_of_use: decision.purpose_of_use,
                grants: decision.grants,
                ..record
            };
        }
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Option<Query> {
        Query::from_pairs(crate::sanitize::injection::query_pairs(text))
    }

    #[test]
    fn an_end_record_gets_its_decisions_fields_back_once() {
        let decision = AuditRecord {
            kind: "decision".into(),
            time: 100,
            request_id: Some("r1".into()),
            user: Some("u1".into()),
            patient: Some("p7".into()),
            categories: vec!["labs".into()],
            grants: vec!["g1".into()],
            decision: Some("allowed".into()),
            ..AuditRecord::default()
        };
        let ended = AuditRecord {
            kind: "request".into(),
            time: 100,
            request_id: Some("r1".into()),
            decision: Some("failed".into()),
            code: Some("WG-UP-001".into()),
            status: Some(502),
            decided_in: Some(4),
            ..AuditRecord::default()
        };
        let mut reader = Reader::default();
        assert_eq!(reader.read(4, decision.clone()), decision);
        let read = reader.read(9, ended.clone());
        assert_eq!(
            (read.user.as_deref(), read.patient.as_deref()),
            (Some("u1"), Some("p7"))
        );
        assert_eq!(
            (read.categories, read.grants),
            (decision.categories, decision.grants)
        );
        assert_eq!(
            (read.decision.as_deref(), read.code.as_deref(), read.status),
            (Some("failed"), Some("WG-UP-001"), Some(502)),
            "how it ended is the end record's"
        );
        assert_eq!(
            reader.read(10, ended.clone()),
            ended,
            "a decision is joined once"
        );
        let other = AuditRecord {
            decided_in: Some(5),
            ..ended.clone()
        };
        assert_eq!(
            Reader::default().read(11, other.clone()),
            other,
            "no such decision"
        );
    }

    #[test]
    fn a_query_keeps_what_every_filter_matches() {
        let query = pairs("patient=p7&category=labs&since=100&until=200").unwrap();
        let record = AuditRecord {
            kind: "decision".into(),
            time: 150,
            patient: Some("p7".into()),
            categories: vec!["notes".into(), "labs".into()],
            ..AuditRecord::default()
        };
        assert!(query.keeps(&record));
        for other in [
            AuditRecord {
                patient: Some("p8".into()),
                ..record.clone()
            },
            AuditRecord {
                patient: None,
                ..record.clone()
            },
            AuditRecord {
                categories: vec!["notes".into()],
                ..record.clone()
            },
            AuditRecord {
                time: 99,
                ..record.clone()
            },
            AuditRecord {
                time: 201,
                ..record.clone()
            },
        ] {
            assert!(!query.keeps(&other), "{other:?}");
        }
        assert!(pairs("").unwrap().keeps(&record), "no filter keeps all");
        let grant = pairs("grant=g1&kind=decision&decision=allowed&user=u1").unwrap();
        let granted = AuditRecord {
            grants: vec!["g1".into()],
            decision: Some("allowed".into()),
            user: Some("u1".into()),
            ..record.clone()
        };
        assert!(grant.keeps(&granted));
        assert!(!grant.keeps(&AuditRecord {
            kind: "request".into(),
            ..granted.clone()
        }));
        for refused in [
            "patient=p7&patient=p8",
            "since=soon",
            "until=1&until=2",
            "who=me",
        ] {
            assert_eq!(pairs(refused), None, "{refused}");
        }
    }
}
