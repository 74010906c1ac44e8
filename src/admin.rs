//! The admin listener: `/healthz`, `/readyz` and Prometheus `/metrics`.
//!
//! It listens on loopback by default and serves no patient data; anything else is 404.
//! `/healthz` answers while the process runs; `/readyz` turns 503 as soon as shutdown starts, so
//! a load balancer stops sending new work before the drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::body::ResponseBody;
use crate::refusal::Refusal;
use crate::telemetry::Telemetry;

pub async fn serve(listener: TcpListener, telemetry: Arc<Telemetry>, ready: Arc<AtomicBool>) {
    crate::server::serve_http1(listener, move |request| {
        answer(&request, &telemetry, ready.load(Ordering::SeqCst))
    })
    .await;
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::from(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn answer(
    request: &Request<Incoming>,
    telemetry: &Telemetry,
    ready: bool,
) -> Response<ResponseBody> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Refusal::AdminNotFound.response();
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" if ready => text(StatusCode::OK, "text/plain", "ready\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n",
        ),
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            telemetry.render(),
        ),
        _ => Refusal::AdminNotFound.response(),
    }
}
