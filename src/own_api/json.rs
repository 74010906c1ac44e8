//! What the gateway's JSON API calls share: reading a request body and answering.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use crate::body::{self, IdleBody, ResponseBody};
use crate::refusal::Refusal;
use crate::refused::Refused;
use crate::sanitize::request::media_type;

/// Bodies of this API are a name and a password (at most 128 characters), a token or a code.
const BODY_LIMIT: u64 = 8 * 1024;

/// The body of a JSON call: `Content-Type: application/json` (a cross-site form cannot send it
/// without a CORS preflight) and at most [`BODY_LIMIT`] bytes.
pub async fn body(request: Request<Incoming>, idle: Duration) -> Result<Bytes, Refused> {
    if media_type(request.headers()).as_deref() != Some("application/json") {
        return Err(Refusal::UnsupportedMediaType.into());
    }
    Ok(
        body::read_limited(IdleBody::new(request.into_body(), idle), BODY_LIMIT)
            .await
            .map_err(Refusal::from)?,
    )
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Refused> {
    serde_json::from_slice(bytes).map_err(|_| Refusal::MalformedApiRequest.into())
}

/// A 200 JSON answer; never cached (it may carry a token or secrets shown once).
pub fn ok(value: &serde_json::Value) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::from(Bytes::from(value.to_string())));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
