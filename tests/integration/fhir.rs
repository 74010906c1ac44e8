//! FHIR routes (`fhir: true`): the access policy reads FHIR REST requests and checks FHIR
//! answers, against a mock FHIR server that keeps real FHIR R4 example resources
//! (`tests/fixtures/fhir-r4`, from HL7's fhir-test-cases) and searches them the way FHIR servers
//! do by default: the parameters it supports (`_id`, `patient`, `subject`) narrow the result,
//! any other parameter is ignored ("lenient" handling).

use std::path::Path;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::harness::*;
use crate::policy::{assertion_of, get_as, link, person};
use crate::sessions::call;

const POLICY: &str = r#"policy:
  categories: { demographics: {}, labs: {}, vitals: {}, notes: {} }
  roles:
    physician: { care_team: [demographics, labs, vitals, notes] }
    dermatologist: { care_team: [demographics, vitals, notes], request: [labs] }
    operator: { operator: true }
  fhir:
    resources:
      Patient: { data: demographics }
      Observation:
        category: { laboratory: labs, vital-signs: vitals }
        data: labs
      DiagnosticReport: { category: { LAB: labs, HM: labs }, data: labs }
      Condition: { data: notes }
    shared: [Practitioner]
    max_answer: 256KiB
"#;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fhir-r4");
    std::fs::read_to_string(path.join(name)).unwrap()
}

/// The example resources, one by one (the lab report's bundle unpacked).
fn resources() -> Vec<Value> {
    let mut resources = Vec::new();
    for name in [
        "patient-example.json",
        "observation-example.json",
        "condition-example.json",
        "practitioner-example.json",
        "diagnosticreport-example.json",
    ] {
        let resource: Value = serde_json::from_str(&fixture(name)).unwrap();
        match resource["entry"].as_array() {
            Some(entries) => resources.extend(entries.iter().map(|e| e["resource"].clone())),
            None => resources.push(resource),
        }
    }
    resources
}

fn fhir_json(status: StatusCode, body: &Value) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/fhir+json; charset=utf-8")
        .body(full(body.to_string()))
        .unwrap()
}

fn not_found() -> Value {
    json!({ "resourceType": "OperationOutcome",
        "issue": [{ "severity": "error", "code": "not-found" }] })
}

/// Whether `resource` belongs to `patient` the way the server's `patient`/`subject` search
/// parameters read it.
fn of_patient(resource: &Value, patient: &str) -> bool {
    let reference = format!("Patient/{patient}");
    ["subject", "patient"]
        .iter()
        .any(|element| resource[element]["reference"] == reference.as_str())
}

/// A FHIR server under `/fhir` with the example resources.
async fn fhir_server() -> MockUpstream {
    let resources = Arc::new(resources());
    MockUpstream::start(move |request: Request<Incoming>| {
        let resources = resources.clone();
        async move {
            let path = request.uri().path().trim_start_matches("/fhir/").to_owned();
            let query = request.uri().query().unwrap_or_default().to_owned();
            let segments: Vec<&str> = path.split('/').collect();
            let (kind, mut patient) = match segments.as_slice() {
                ["metadata"] => {
                    let statement: Value =
                        serde_json::from_str(&fixture("capabilitystatement-example.json"))
                            .unwrap();
                    return fhir_json(StatusCode::OK, &statement);
                }
                [kind, id] => {
                    return match resources
                        .iter()
                        .find(|r| r["resourceType"] == *kind && r["id"] == *id)
                    {
                        Some(found) => fhir_json(StatusCode::OK, found),
                        None => fhir_json(StatusCode::NOT_FOUND, &not_found()),
                    };
                }
                ["Patient", id, kind] => ((*kind).to_owned(), Some((*id).to_owned())),
                [kind] => ((*kind).to_owned(), None),
                _ => return fhir_json(StatusCode::BAD_REQUEST, &not_found()),
            };
            let mut id = None;
            for pair in query.split('&') {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let value = value.trim_start_matches("Patient/").to_owned();
                match name {
                    "patient" | "subject" => patient = Some(value),
                    "_id" => id = Some(value),
                    _ => {} // lenient: not supported, ignored
                }
            }
            let matches: Vec<&Value> = resources
                .iter()
                .filter(|r| r["resourceType"] == kind.as_str())
                .filter(|r| patient.as_ref().is_none_or(|p| of_patient(r, p)))
                .filter(|r| id.as_ref().is_none_or(|id| r["id"] == id.as_str()))
                .collect();
            let bundle = json!({
                "resourceType": "Bundle",
                "type": "searchset",
                "total": matches.len(),
                "entry": matches.iter().map(|r| json!({
                    "fullUrl": format!("http://fhir.example/fhir/{}/{}", r["resourceType"].as_str().unwrap(), r["id"].as_str().unwrap()),
                    "resource": r,
                    "search": { "mode": "match" },
                })).collect::<Vec<_>>(),
            });
            fhir_json(StatusCode::OK, &bundle)
        }
    })
    .await
}

/// A legacy FHIR facade that ignores what it is asked for: FHIR XML by default, gzip whether
/// asked or not (`…/gzipped`), a condition with a notes field far beyond
/// `policy.fhir.max_answer` (`…/huge`), FHIR JSON labelled as a web page (`…/mislabelled`),
/// and an Observation search answered with pat2's lab results whoever was asked for.
async fn xml_server() -> MockUpstream {
    MockUpstream::start(|request: Request<Incoming>| async move {
        let path = request.uri().path().to_owned();
        let condition: Value = serde_json::from_str(&fixture("condition-example.json")).unwrap();
        let json = Response::builder().header(header::CONTENT_TYPE, "application/fhir+json");
        if path.ends_with("/gzipped") {
            return json
                .header(header::CONTENT_ENCODING, "gzip")
                .body(full(condition.to_string()))
                .unwrap();
        }
        if path.ends_with("/Observation") {
            // A search that ignores its `patient`: pat2's lab results, whoever was asked for.
            let report: Value =
                serde_json::from_str(&fixture("diagnosticreport-example.json")).unwrap();
            let labs: Vec<Value> = report["entry"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["resource"]["resourceType"] == "Observation")
                .take(2)
                .map(|e| json!({ "resource": e["resource"], "search": { "mode": "match" } }))
                .collect();
            let bundle = json!({ "resourceType": "Bundle", "type": "searchset", "entry": labs });
            return json.body(full(bundle.to_string())).unwrap();
        }
        if path.ends_with("/mislabelled") {
            return Response::builder()
                .header(header::CONTENT_TYPE, "text/html")
                .body(full(condition.to_string()))
                .unwrap();
        }
        if path.ends_with("/huge") {
            let mut huge = condition;
            huge["note"] = serde_json::json!([{ "text": "x".repeat(300 * 1024) }]);
            return json.body(full(huge.to_string())).unwrap();
        }
        Response::builder()
            .header(header::CONTENT_TYPE, "application/fhir+xml")
            .body(full(fixture("condition-example.xml")))
            .unwrap()
    })
    .await
}

async fn gateway(fhir: &MockUpstream, xml: &MockUpstream) -> TestGateway {
    gateway_with(fhir, xml, "").await
}

/// The FHIR gateway, with `more` config after the policy.
async fn gateway_with(fhir: &MockUpstream, xml: &MockUpstream, more: &str) -> TestGateway {
    let config = config_with(
        &format!(
            "  fhir: {{ url: \"{}\" }}\n  legacy: {{ url: \"{}\" }}",
            fhir.url(),
            xml.url()
        ),
        r#"  - name: fhir
    path: /fhir/**
    upstream: fhir
    auth: session
    patient_data: true
    fhir: true
    identity: { assertion: [] }
  - name: legacy
    path: /legacy/fhir/**
    upstream: legacy
    auth: session
    patient_data: true
    fhir: true"#,
        &format!("{POLICY}{more}"),
    );
    TestGateway::start(&config).await
}

#[tokio::test]
async fn a_read_by_id_is_recorded_with_the_patient_its_answer_names() {
    let (fhir, xml) = (fhir_server().await, xml_server().await);
    let gateway = gateway_with(&fhir, &xml, crate::audit::TRAIL).await;
    let dana = person(&gateway, "dana", &["dermatologist"]).await;
    link(&gateway, "dana", "example").await;
    let (status, _, _) = get_as(&gateway, "/fhir/Observation/example", &dana).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get_as(&gateway, "/fhir/Observation/r1", &dana).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let dir = gateway.stop().await;
    let all = crate::audit::records(dir.path());
    let read = all
        .iter()
        .find(|r| r["kind"] == "request" && r["path"] == "/fhir/Observation/example")
        .unwrap();
    assert_eq!(
        (
            &read["patient"],
            &read["categories"],
            &read["purpose_of_use"]
        ),
        (&json!("example"), &json!(["vitals"]), &json!("TREAT")),
        "{read}"
    );
    assert!(read.get("decided_in").is_none(), "whole: {read}");
    // Refused on its answer: the end record of the forwarded request names no one.
    let decided = all
        .iter()
        .find(|r| r["kind"] == "decision" && r["path"] == "/fhir/Observation/r1")
        .unwrap();
    let refused = all
        .iter()
        .find(|r| r["kind"] == "request" && r["decided_in"] == decided["seq"])
        .unwrap();
    assert_eq!(refused["code"], "WG-FHIR-007");
    assert!(refused.get("patient").is_none(), "{refused}");
}

/// Asserts that `token`'s GET of `path` is refused with `status` and `code`.
async fn refused_as(
    gateway: &TestGateway,
    path: &str,
    token: &str,
    status: StatusCode,
    code: &str,
) {
    let (got, got_code, _) = get_as(gateway, path, token).await;
    assert_eq!((got, got_code.as_str()), (status, code), "{path}");
}

/// The entries of a search answer: `Type/id` of each, in order.
fn entries(body: &str) -> Vec<String> {
    let bundle: Value = serde_json::from_str(body).unwrap();
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let r = &e["resource"];
            format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

#[tokio::test]
async fn the_policy_reads_fhir_requests_and_checks_what_the_answers_carry() {
    let (fhir, xml) = (fhir_server().await, xml_server().await);
    let gateway = gateway(&fhir, &xml).await;
    let dana = person(&gateway, "dana", &["dermatologist"]).await;
    link(&gateway, "dana", "example").await;
    link(&gateway, "dana", "pat2").await;

    // The patient and her vital signs, read by id: the answers say whose they are.
    let (status, _, _) = get_as(&gateway, "/fhir/Patient/example", &dana).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get_as(&gateway, "/fhir/Observation/example", &dana).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "vital signs of a patient on her care team"
    );
    // A lab result read by id: pat2's labs, which a dermatologist sees only with a grant.
    let (status, headers, body) = call(&gateway, "/fhir/Observation/r1", Some(&dana), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let refusal: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(refusal["error"], "WG-FHIR-007", "{body}");
    assert!(
        !body.contains("pat2") && !body.contains("Haemoglobin"),
        "{body}"
    );
    assert!(
        headers.get(header::LINK).is_none(),
        "whose it is stays unsaid"
    );

    // Searches name one patient and, on a type of several categories, the category.
    refused_as(
        &gateway,
        "/fhir/Observation?patient=example",
        &dana,
        StatusCode::FORBIDDEN,
        "WG-FHIR-003",
    )
    .await;
    let (status, _, body) = call(
        &gateway,
        "/fhir/Observation?patient=example&category=vital-signs",
        Some(&dana),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(entries(&body), ["Observation/example"]);
    // The server ignores `category` and answers pat2's lab results too: each entry is decided
    // on its own category, not on the one the search named.
    let (status, _, body) = call(
        &gateway,
        "/fhir/Observation?patient=pat2&category=vital-signs",
        Some(&dana),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(entries(&body), ["OperationOutcome/-"], "{body}");
    let (status, _, body) = call(
        &gateway,
        "/fhir/Observation?patient=example&category=vital-signs",
        Some(&dana),
        &[],
    )
    .await;
    assert_eq!((status, entries(&body).len()), (StatusCode::OK, 1));
    let verified = assertion_of(&gateway, &fhir, "/fhir/Observation", "fhir").await;
    assert_eq!(verified["purpose_of_use"], "TREAT");
    assert_eq!(verified["patient"], "example");
    assert_eq!(
        verified["scope"],
        "patient/Observation.rs?category=vital-signs"
    );
    let seen = fhir.seen();
    assert_eq!(
        seen.last().unwrap().headers[header::ACCEPT],
        "application/fhir+json"
    );
    let (status, code, headers) = get_as(
        &gateway,
        "/fhir/Observation?patient=pat2&category=laboratory",
        &dana,
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "WG-POLICY-001")
    );
    assert!(
        headers.contains_key(header::LINK),
        "she may ask for the labs"
    );
    let (status, _, body) = call(
        &gateway,
        "/fhir/Patient/example/Condition",
        Some(&dana),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the compartment names the patient");
    assert_eq!(entries(&body), ["Condition/example"]);

    // The server does not support `subject:Patient` and ignores it: every patient's
    // observations come back, and only hers of the allowed category leave.
    let (status, _, body) = call(
        &gateway,
        "/fhir/Observation?subject:Patient=example&category=vital-signs",
        Some(&dana),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let listed = entries(&body);
    assert_eq!(
        listed,
        ["Observation/example", "OperationOutcome/-"],
        "{body}"
    );
    let bundle: Value = serde_json::from_str(&body).unwrap();
    assert!(bundle.get("total").is_none(), "the total would count them");
    assert_eq!(
        bundle["entry"][1]["resource"]["issue"][0]["code"],
        "suppressed"
    );
    assert_eq!(bundle["entry"][1]["search"]["mode"], "outcome");

    // What reaches other resources, names no patient, or is not FHIR the gateway can check.
    for (path, status, code) in [
        (
            "/fhir/Observation?code=718-7",
            StatusCode::FORBIDDEN,
            "WG-FHIR-002",
        ),
        (
            "/fhir/Observation?subject=Group/101&category=laboratory",
            StatusCode::FORBIDDEN,
            "WG-FHIR-002",
        ),
        (
            "/fhir/Observation?patient=example&category=vital-signs&_include=Observation:performer",
            StatusCode::FORBIDDEN,
            "WG-FHIR-004",
        ),
        (
            "/fhir/Patient?_id=example&_revinclude=Observation:subject",
            StatusCode::FORBIDDEN,
            "WG-FHIR-004",
        ),
        (
            "/fhir/Patient?_has:Observation:patient:code=718-7",
            StatusCode::FORBIDDEN,
            "WG-FHIR-004",
        ),
        (
            "/fhir/Observation?subject.name=peter&category=laboratory",
            StatusCode::FORBIDDEN,
            "WG-FHIR-004",
        ),
        (
            "/fhir/Encounter?patient=example",
            StatusCode::FORBIDDEN,
            "WG-FHIR-005",
        ),
        (
            "/fhir/Observation?patient=example&category=vital-signs&_format=xml",
            StatusCode::NOT_ACCEPTABLE,
            "WG-FHIR-006",
        ),
        (
            "/fhir/Patient/example/$everything",
            StatusCode::BAD_REQUEST,
            "WG-FHIR-001",
        ),
        (
            "/fhir/Observation/_history",
            StatusCode::BAD_REQUEST,
            "WG-FHIR-001",
        ),
        (
            "/legacy/fhir/Condition?patient=example",
            StatusCode::BAD_GATEWAY,
            "WG-FHIR-008",
        ),
        (
            "/legacy/fhir/Condition/gzipped",
            StatusCode::BAD_GATEWAY,
            "WG-FHIR-008",
        ),
        (
            "/legacy/fhir/Condition/huge",
            StatusCode::BAD_GATEWAY,
            "WG-FHIR-008",
        ),
        (
            "/legacy/fhir/Condition/mislabelled",
            StatusCode::BAD_GATEWAY,
            "WG-FHIR-008",
        ),
    ] {
        refused_as(&gateway, path, &dana, status, code).await;
    }
    let (status, _, _) = get_as(&gateway, "/fhir/metadata", &dana).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the capability statement carries no patient"
    );
    let (status, _, _) = get_as(&gateway, "/fhir/Practitioner/example", &dana).await;
    assert_eq!(status, StatusCode::OK, "a shared type");
    let post = Request::builder()
        .method(Method::POST)
        .uri(gateway.url("/fhir/Observation"))
        .header(header::AUTHORIZATION, format!("Bearer {dana}"))
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .body(full(fixture("observation-example.json")))
        .unwrap();
    let response = gateway.client(false).request(post).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()[header::ALLOW], "GET");
    gateway.stop().await;
}

#[tokio::test]
async fn a_physician_sees_only_her_patients_and_an_operator_nothing() {
    let (fhir, xml) = (fhir_server().await, xml_server().await);
    let gateway = gateway(&fhir, &xml).await;
    let paula = person(&gateway, "paula", &["physician"]).await;
    link(&gateway, "paula", "example").await;
    let (status, _, body) = call(
        &gateway,
        "/fhir/Observation?patient=example",
        Some(&paula),
        &[],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "she may see every category: no category= needed"
    );
    assert_eq!(entries(&body), ["Observation/example"]);
    let verified = assertion_of(&gateway, &fhir, "/fhir/Observation", "fhir").await;
    assert_eq!(
        verified["scope"],
        "patient/DiagnosticReport.rs?category=HM patient/DiagnosticReport.rs?category=LAB \
         patient/Observation.rs?category=laboratory patient/Observation.rs?category=vital-signs"
    );
    refused_as(
        &gateway,
        "/fhir/Observation/r3",
        &paula,
        StatusCode::FORBIDDEN,
        "WG-FHIR-007",
    )
    .await;
    refused_as(
        &gateway,
        "/fhir/Patient/pat2",
        &paula,
        StatusCode::FORBIDDEN,
        "WG-POLICY-001",
    )
    .await;
    // The server ignores `subject:Patient`: pat2's 17 lab results and the report come back
    // and are taken out.
    let (status, _, body) = call(
        &gateway,
        "/fhir/DiagnosticReport?subject:Patient=example&category=LAB",
        Some(&paula),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(entries(&body), ["OperationOutcome/-"]);
    // On pat2's care team too, she still gets only the patient she searched for: a server that
    // answers with someone else's results shows them to no one.
    link(&gateway, "paula", "pat2").await;
    let (status, _, body) = call(
        &gateway,
        "/legacy/fhir/Observation?patient=example&category=laboratory",
        Some(&paula),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(entries(&body), ["OperationOutcome/-"], "{body}");
    let (status, _, body) = call(
        &gateway,
        "/legacy/fhir/Observation?patient=pat2&category=laboratory",
        Some(&paula),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        entries(&body),
        ["Observation/r1", "Observation/r2"],
        "{body}"
    );

    let olga = person(&gateway, "olga", &["operator"]).await;
    for path in ["/fhir/Patient/example", "/fhir/Condition?patient=example"] {
        refused_as(
            &gateway,
            path,
            &olga,
            StatusCode::FORBIDDEN,
            "WG-POLICY-003",
        )
        .await;
    }
    gateway.stop().await;
}
