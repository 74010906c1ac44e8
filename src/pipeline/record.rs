//! Phase 11, record: the request's one log line and its metrics.
//!
//! Runs for every request, allowed, refused or failed, and cannot refuse. The record the
//! phases filled in is closed exactly once, when the response body ends or the client leaves
//! (`body.rs`), so the duration and the outcome are those the client saw; then its `request`
//! record goes to the audit trail (queued, not waited for: a patient-data request's `decision`
//! record was made durable before it was forwarded).

use std::sync::Arc;

use http::Response;

use crate::audit::sink::AuditSink;
use crate::body::ResponseBody;
use crate::policy::{self, DataRule};
use crate::refusal::Refusal;
use crate::refused::Refused;
use crate::session::Live;
use crate::telemetry::{Finished, RecordAccess, RequestRecord, RouteLabels, Telemetry};

use super::authorize::Allowed;
use super::build::Gateway;

impl Gateway {
    /// What the audit trail keeps of a patient-data request before it is decided: the patient
    /// and category a REST route's request names (a FHIR request's are known once decided).
    pub(super) fn asked_access(
        &self,
        rule: &DataRule,
        live: &Live,
        path: &str,
        query: Option<&str>,
    ) -> RecordAccess {
        let (patient, categories) = match (rule, self.policy.as_deref()) {
            (DataRule::Rest { category, patient }, Some(policy)) => (
                patient.find(path, query),
                vec![policy.category_name(*category).to_owned()],
            ),
            _ => (None, Vec::new()),
        };
        RecordAccess {
            roles: live.roles.clone(),
            patient,
            categories,
            ..RecordAccess::default()
        }
    }

    /// What the audit trail keeps of a patient-data request's decision (`allowed`).
    pub(super) fn record_access(&self, live: &Live, allowed: Option<&Allowed>) -> RecordAccess {
        let roles = live.roles.clone();
        let (Some(allowed), Some(policy)) = (allowed, self.policy.as_deref()) else {
            // A FHIR read by id, decided on its answer, or a request for no patient's data.
            return RecordAccess {
                roles,
                ..RecordAccess::default()
            };
        };
        let bases = allowed.decisions.iter().map(|(_, basis)| *basis);
        RecordAccess {
            roles,
            patient: Some(allowed.patient.clone()),
            categories: allowed
                .decisions
                .iter()
                .map(|(category, _)| policy.category_name(*category).to_owned())
                .collect(),
            purpose_of_use: Some(policy::purpose_of_use(bases)),
            grants: allowed.grants(),
        }
    }
}

/// The `decision` record of a patient-data request, on disk before the request is
/// forwarded: 503 `WG-AUDIT-001` when the trail cannot take it.
pub(super) async fn audit_decision(
    audit: &AuditSink,
    record: &mut RequestRecord,
    labels: &RouteLabels,
) -> Result<(), Refused> {
    let seq = audit
        .durable(&record.audit("decision", Some(labels)))
        .await
        .map_err(|error| Refused::because(Refusal::AuditUnavailable, &error))?;
    record.decided = Some(seq);
    Ok(())
}

/// Phase 11: `record` travels with the response body, to be closed when it ends.
pub(super) fn attach(
    response: Response<ResponseBody>,
    record: RequestRecord,
    telemetry: &Arc<Telemetry>,
    unrouted: &Arc<RouteLabels>,
    audit: Option<&Arc<AuditSink>>,
) -> Response<ResponseBody> {
    let finished = Finished::new(telemetry.clone(), record, unrouted.clone(), audit.cloned());
    response.map(|body| body.with_record(finished))
}
