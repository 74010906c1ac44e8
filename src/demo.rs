//! DEMO ONLY: a tiny patient API with synthetic data, so that a newcomer's first
//! `wardgate run` has something to proxy. It runs only when the config has a `demo_backend`
//! section, listens on loopback only, and every answer says `"demo": true`. No real person's
//! data is in here.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;

const PATIENTS: [(&str, &str, &str); 3] = [
    ("1", "Ada Demo", "1961-04-12"),
    ("2", "Grace Sample", "1975-09-30"),
    ("3", "Alan Example", "1988-01-07"),
];

fn patient(id: &str) -> Option<serde_json::Value> {
    PATIENTS
        .iter()
        .find(|(pid, _, _)| *pid == id)
        .map(|(id, name, born)| json!({"id": id, "name": name, "birthDate": born, "demo": true}))
}

/// The demo API's answer to one request (the server serves it on `demo_backend.listen`).
pub fn answer(request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "method not allowed", "demo": true}),
        );
    }
    let segments: Vec<&str> = request.uri().path().trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["status"] => reply(
            StatusCode::OK,
            json!({"status": "ok", "service": "wardgate demo patient API", "demo": true}),
        ),
        ["patients"] => {
            let all: Vec<_> = PATIENTS
                .iter()
                .filter_map(|(id, _, _)| patient(id))
                .collect();
            reply(StatusCode::OK, json!({"patients": all, "demo": true}))
        }
        ["patients", id] => match patient(id) {
            Some(p) => reply(StatusCode::OK, p),
            None => not_found(),
        },
        ["patients", id, "labs"] if patient(id).is_some() => reply(
            StatusCode::OK,
            json!({"patient": id, "demo": true, "labs": [
                {"code": "2345-7", "name": "Glucose", "value": 5.4, "unit": "mmol/L"},
                {"code": "718-7", "name": "Hemoglobin", "value": 13.9, "unit": "g/dL"}
            ]}),
        ),
        ["patients", id, "notes"] if patient(id).is_some() => reply(
            StatusCode::OK,
            json!({"patient": id, "demo": true, "notes": [
                {"date": "2026-11-02", "author": "Dr. Demo", "text": "Itchy rash on both forearms since a week; no fever."}
            ]}),
        ),
        ["patients", id, "imaging"] if patient(id).is_some() => reply(
            StatusCode::OK,
            json!({"patient": id, "demo": true, "imaging": [
                {"date": "2026-10-20", "modality": "XR", "study": "Chest, two views", "finding": "No acute findings."}
            ]}),
        ),
        _ => not_found(),
    }
}

fn not_found() -> Response<Full<Bytes>> {
    reply(
        StatusCode::NOT_FOUND,
        json!({"error": "not found", "demo": true}),
    )
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("wardgate-demo"));
    response
}
