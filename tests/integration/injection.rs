//! Injection detection on attack strings and clinical look-alikes. The measurement against
//! outside corpora (OWASP CRS regression tests, FHIR R4 examples) is `benches/corpora.rs`: the
//! test suite reads nothing outside the repository.

use wardgate::sanitize::injection::{
    Attack, FieldAllowList, scan_form, scan_json, scan_query, scan_value,
};

// ---------------------------------------------------------------------------------------------
// Known attacks and clinical look-alikes

#[test]
fn known_attack_strings_are_caught() {
    let cases: &[(&str, Attack)] = &[
        ("' OR '1'='1", Attack::SqlInjection),
        ("1; DROP TABLE patients--", Attack::SqlInjection),
        ("admin'--", Attack::SqlInjection),
        (
            "1 UNION SELECT username, password FROM users",
            Attack::SqlInjection,
        ),
        ("<script>alert(1)</script>", Attack::CrossSiteScripting),
        ("<img src=x onerror=alert(1)>", Attack::CrossSiteScripting),
        ("javascript:alert(1)", Attack::CrossSiteScripting),
        ("../../etc/passwd", Attack::PathTraversal),
        ("..%2f..%2fetc%2fpasswd", Attack::PathTraversal),
        ("....//....//etc/passwd", Attack::PathTraversal),
        ("; cat /etc/passwd", Attack::CommandInjection),
        ("| id", Attack::CommandInjection),
        ("$(whoami)", Attack::CommandInjection),
        ("`id`", Attack::CommandInjection),
    ];
    let allow = FieldAllowList::default();
    for (payload, attack) in cases {
        assert_eq!(scan_value(payload), Some(*attack), "{payload}");
        let doc = serde_json::json!({ "note": { "text": payload } });
        let finding = scan_json(&doc, &allow).unwrap_or_else(|| panic!("json: {payload}"));
        assert_eq!(
            (finding.attack, finding.field.as_str()),
            (*attack, "json:note.text")
        );
        let encoded = percent_encode(payload);
        let finding = scan_query(&format!("q={encoded}"), &allow)
            .unwrap_or_else(|| panic!("query: {payload}"));
        assert_eq!(finding.field, "query:q");
        let finding = scan_form(format!("a=b&f={encoded}").as_bytes(), &allow)
            .unwrap()
            .unwrap_or_else(|| panic!("form: {payload}"));
        assert_eq!(finding.field, "form:f");
    }
}

#[test]
fn clinical_values_pass() {
    let pdf = "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmlsdGVyIC9GbGF0ZURlY29kZT4+\
               CnN0cmVhbQp4nCvkMlAwUDC1NDJRMDIxUzC0MDAzNjZVMLE0NDMwMzQyULBWMDMyNDI2tzA0MDQwNTY0\
               MTY3MTSwNDJWcMnnCuQCAP7jDKkKZW5kc3RyZWFtCmVuZG9iago2IDAgb2JqCjY0CmVuZG9iago=";
    let values = [
        "O'Brien",
        "Mary-Jane D'Arcy",
        "Patient reports 5 < 7 pain",
        "select the drop-down to update",
        "Patient dropped out; union of fracture confirmed on x-ray",
        "BP 120/80; HR 72",
        "Take 1 tab by mouth - do not exceed 4/day",
        "sleep apnea; sleep study scheduled",
        "Patient/123",
        "2024-03-15T10:30:00+01:00",
        "https://example.org/fhir/Patient?name=smith&_count=10",
        "http://loinc.org|8867-4",
        "Allergic to penicillin (rash); \"mild\" per patient",
        pdf,
    ];
    let allow = FieldAllowList::default();
    for value in values {
        assert_eq!(scan_value(value), None, "{value}");
        let encoded = percent_encode(value);
        assert_eq!(scan_query(&format!("q={encoded}"), &allow), None, "{value}");
        assert_eq!(
            scan_form(format!("f={encoded}").as_bytes(), &allow),
            Ok(None),
            "{value}"
        );
    }
    let narrative = serde_json::json!({
        "resourceType": "AllergyIntolerance",
        "text": {
            "status": "generated",
            "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><b>allergy</b> to peanuts</div>"
        },
        "note": [{ "text": "O'Brien's mother: \"severe\"" }],
        "contained": [{ "text": { "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>x</p></div>" } }]
    });
    assert_eq!(scan_json(&narrative, &allow), None);
    // Without the allow list the narrative is refused: the exemption is doing the work.
    let allowed_nowhere = FieldAllowList::new(Vec::<String>::new());
    let finding = scan_json(&narrative, &allowed_nowhere).map(|f| (f.attack, f.field));
    assert_eq!(
        finding,
        Some((
            Attack::CrossSiteScripting,
            "json:contained.text.div".to_owned()
        ))
    );
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
