//! The trail's records in the shapes other systems take: RFC 5424 syslog lines for a SIEM, and
//! FHIR R4 `AuditEvent` resources shaped as IHE's Basic Audit Log Patterns (BALP) describe a
//! patient read or query, for a hospital's FHIR audit repository.
//!
//! ```text
//!  record (decision, or a refused request naming a patient)   AuditEvent (BALP PatientRead)
//!  time                                                       recorded
//!  decision / code                                            outcome 0 / 4, outcomeDesc
//!  purpose_of_use                                             purposeOfEvent (v3-ActReason)
//!  user, roles, grants                                        agent: the person (requestor;
//!                                                               role codes; policy: the grants)
//!  client                                                     agent: source (110153), address
//!  route                                                      agent: destination (110152)
//!  patient                                                    entity: Patient/ID, role 1
//!  path, categories                                           entity: the data, role 4
//! ```
//!
//! A record that names no patient has no `AuditEvent` here (BALP's patient patterns need one).

use serde_json::{Value, json};

use super::AuditRecord;

/// `2026-12-02T03:45:43Z` for unix seconds (UTC; the civil-from-days algorithm of
/// Howard Hinnant's `chrono`-compatible date library).
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let seconds = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// One RFC 5424 line: facility `authpriv` (10), severity notice (5) for what was allowed and
/// warning (4) for the rest, app name `wardgate`, message id the record's kind, no structured
/// data, the record as JSON for the message.
pub fn syslog(record: &AuditRecord, host: &str) -> String {
    let severity = match record.decision.as_deref() {
        Some("allowed") | None => 5,
        Some(_) => 4,
    };
    let message = serde_json::to_string(record).unwrap_or_default();
    format!(
        "<{}>1 {} {host} wardgate - {} - {message}",
        10 * 8 + severity,
        rfc3339(record.time),
        record.kind
    )
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({ "system": system, "code": code, "display": display })
}

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const BALP: &str = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/";

/// The record as a BALP patient `AuditEvent` (read, or a search when the path does not carry
/// the patient id), or `None` when it names no patient (security events never do).
pub fn audit_event(record: &AuditRecord, seq: u64) -> Option<Value> {
    let patient = record.patient.as_deref()?;
    // A path that does not carry the patient id found it in the query: a search.
    let query = record.path.as_deref().is_some_and(|p| !p.contains(patient));
    let (profile, interaction, action) = match query {
        true => ("IHE.BasicAudit.PatientQuery", "search-type", "E"),
        false => ("IHE.BasicAudit.PatientRead", "read", "R"),
    };
    let allowed = record.decision.as_deref() == Some("allowed");
    let mut person = json!({
        "type": { "coding": [coding("http://terminology.hl7.org/CodeSystem/extra-security-role-type", "humanuser", "human user")] },
        "who": { "identifier": { "system": "urn:wardgate:user", "value": record.user.clone().unwrap_or_default() } },
        "requestor": true,
        "role": record.roles.iter().map(|role| json!({ "coding": [{ "system": "urn:wardgate:role", "code": role }] })).collect::<Vec<_>>(),
    });
    if !record.grants.is_empty() {
        person["policy"] = json!(
            record
                .grants
                .iter()
                .map(|grant| format!("urn:wardgate:grant:{grant}"))
                .collect::<Vec<_>>()
        );
    }
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": format!("wardgate-{seq}"),
        "meta": { "profile": [format!("{BALP}{profile}")] },
        "type": coding("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "Restful Operation"),
        "subtype": [coding("http://hl7.org/fhir/restful-interaction", interaction, interaction)],
        "action": action,
        "recorded": rfc3339(record.time),
        "outcome": if allowed { "0" } else { "4" },
        "agent": [
            {
                "type": { "coding": [coding(DCM, "110153", "Source Role ID")] },
                "who": { "display": "client" },
                "requestor": false,
                "network": { "address": record.client.clone().unwrap_or_default(), "type": "2" },
            },
            {
                "type": { "coding": [coding(DCM, "110152", "Destination Role ID")] },
                "who": { "display": record.route.clone().unwrap_or_default() },
                "requestor": false,
            },
            person,
        ],
        "source": {
            "observer": { "display": "wardgate" },
            "type": [coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server")],
        },
        "entity": [
            {
                "what": { "reference": format!("Patient/{patient}") },
                "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1", "Person"),
                "role": coding("http://terminology.hl7.org/CodeSystem/object-role", "1", "Patient"),
            },
            {
                "what": { "identifier": { "value": record.path.clone().unwrap_or_default() } },
                "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
                "role": coding("http://terminology.hl7.org/CodeSystem/object-role", "4", "Domain Resource"),
                "securityLabel": record.categories.iter().map(|c| json!({ "system": "urn:wardgate:category", "code": c })).collect::<Vec<_>>(),
            },
        ],
    });
    if let Some(purpose) = &record.purpose_of_use {
        event["purposeOfEvent"] = json!([{ "coding": [coding("http://terminology.hl7.org/CodeSystem/v3-ActReason", purpose, purpose)] }]);
    }
    if let Some(code) = &record.code {
        event["outcomeDesc"] = json!(code);
    }
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_rfc_3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_800_000_000), "2027-01-15T08:00:00Z");
        assert_eq!(rfc3339(1_796_183_143), "2026-12-02T03:45:43Z");
    }

    fn read() -> AuditRecord {
        AuditRecord {
            kind: "decision".into(),
            time: 1_800_000_000,
            client: Some("203.0.113.7".into()),
            user: Some("ab".repeat(16)),
            roles: vec!["dermatologist".into()],
            route: Some("labs".into()),
            path: Some("/api/patients/p7/labs/1".into()),
            patient: Some("p7".into()),
            categories: vec!["labs".into()],
            decision: Some("allowed".into()),
            purpose_of_use: Some("TREAT".into()),
            grants: vec!["cd".repeat(16)],
            ..AuditRecord::default()
        }
    }

    #[test]
    fn a_patient_read_is_a_balp_patient_read() {
        let event = audit_event(&read(), 42).unwrap();
        assert_eq!(event["resourceType"], "AuditEvent");
        assert_eq!(
            event["meta"]["profile"][0],
            format!("{BALP}IHE.BasicAudit.PatientRead")
        );
        assert_eq!(
            (event["action"].as_str(), event["outcome"].as_str()),
            (Some("R"), Some("0"))
        );
        assert_eq!(event["recorded"], "2027-01-15T08:00:00Z");
        assert_eq!(event["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");
        assert_eq!(event["entity"][0]["what"]["reference"], "Patient/p7");
        assert_eq!(event["entity"][0]["role"]["code"], "1");
        assert_eq!(
            event["agent"][2]["policy"][0],
            format!("urn:wardgate:grant:{}", "cd".repeat(16))
        );
        assert_eq!(event["agent"][2]["requestor"], true);
        let refused = AuditRecord {
            decision: Some("refused".into()),
            code: Some("WG-POLICY-001".into()),
            path: Some("/api/observations".into()),
            ..read()
        };
        let event = audit_event(&refused, 43).unwrap();
        assert_eq!(
            (event["action"].as_str(), event["outcome"].as_str()),
            (Some("E"), Some("4"))
        );
        assert_eq!(event["outcomeDesc"], "WG-POLICY-001");
        let nobody = AuditRecord {
            patient: None,
            ..read()
        };
        assert!(audit_event(&nobody, 44).is_none());
    }

    #[test]
    fn a_syslog_line_is_rfc_5424() {
        let line = syslog(&read(), "gw1");
        assert!(
            line.starts_with("<85>1 2027-01-15T08:00:00Z gw1 wardgate - decision - {"),
            "{line}"
        );
        let refused = AuditRecord {
            decision: Some("refused".into()),
            ..read()
        };
        assert!(syslog(&refused, "gw1").starts_with("<84>1 "));
    }
}
