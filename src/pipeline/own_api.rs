//! Phase 3a, the gateway's own API: paths under `/.wardgate/` are answered here, never routed
//! or proxied.
//!
//! Runs after `sanitize`, instead of `route`. Each request first passes the per-client login
//! limit (the stylesheet and script share the ordinary per-client limit instead, so quick page
//! loads never lose a page its own assets). Pages answer refusals as pages, the JSON API
//! (`/.wardgate/api/`) as JSON, the rate limit's included; unknown paths are 404
//! `WG-AUTH-006`.

use std::net::IpAddr;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::ResponseBody;
use crate::own_api::pages::{self, PageRequest};
use crate::own_api::{access_api, enroll_api, json, login_api, paths};
use crate::ratelimit::{Stage, Subject};
use crate::telemetry::RequestRecord;

use super::build::Gateway;
use super::limit;
use crate::refused::Refused;

/// Whether `path` (normalized) belongs to the gateway's own API.
pub(super) fn owns(path: &str) -> bool {
    paths::is_reserved(path)
}

impl Gateway {
    /// Phase 3a: answers a request for one of the gateway's own paths.
    pub(super) async fn own_api(
        &self,
        request: Request<Incoming>,
        path: String,
        authority: &Authority,
        record: &mut RequestRecord,
        now: u64,
    ) -> Result<Response<ResponseBody>, Refused> {
        record.route = Some(self.own_api.clone());
        let asset = pages::is_asset(&path);
        let limit = if asset {
            paths::ASSET_PREFIX
        } else {
            paths::PREFIX
        };
        let subject = Subject {
            stage: Stage::Anonymous,
            route: limit,
            client: record.client,
            user: None,
            // What upstreams and browsers fetch without any state: the keys, the pages' assets.
            public: asset || path == paths::JWKS,
        };
        let admitted = limit::deny(&self.limiter.check(&subject).await);
        let client = record.client;
        let idle = self.body_idle_timeout;
        if paths::is_page(&path) {
            admitted.map_err(Refused::in_html)?;
            let page = PageRequest::new(request, authority, idle, now, client);
            let access = self.access.as_deref();
            return pages::handle(&self.enrollment, &self.login, access, page, &path)
                .await
                .map_err(Refused::in_html);
        }
        admitted?;
        json(self, request, &path, client, now).await
    }
}

/// The JSON endpoints: the assertion keys, enrollment, access requests, login.
async fn json(
    gateway: &Gateway,
    request: Request<Incoming>,
    path: &str,
    client: IpAddr,
    now: u64,
) -> Result<Response<ResponseBody>, Refused> {
    let idle = gateway.body_idle_timeout;
    if path == paths::JWKS {
        return Ok(json::ok(&gateway.assertion.jwks()));
    }
    if path.starts_with(paths::ENROLL_API_PREFIX) {
        return enroll_api::handle(&gateway.enrollment, request, path, idle, now).await;
    }
    if access_api::owns(path) {
        let access = gateway.access.as_deref();
        return access_api::handle(access, &gateway.login, request, path, idle, now).await;
    }
    login_api::handle(&gateway.login, request, path, client, idle, now).await
}
