//! The request path, written down once.
//!
//! Every request walks these phases in this order (DESIGN.md, "The request path"). A phase
//! either hands the request on, with what it learned, or ends it with a [`Refused`]; whatever
//! happens, `response` and `record` run. Each phase's file states its contract: when it runs,
//! what it reads, what it may decide, and what its refusal looks like.
//!
//! ```text
//!  phase            file                reads                 may refuse with
//!  1 accept         server.rs           the connection        (closes it) TLS, limits,
//!                   sanitize/framing.rs HTTP/1 bytes          timeouts; 400/408/413/414/431
//!  2 early          early.rs            peer, two headers     never
//!  3 sanitize       sanitize.rs         URI, headers, host    400, 414
//!  3a own API       own_api.rs          /.wardgate/ paths     429, then the page or API's own
//!  4 route          route.rs            host, path, head      404, 405, 413, 415, 400
//!  5 rate limit     limit.rs            client address        429
//!  6 authenticate   authenticate.rs     cookie / bearer       401 (303 to login), 503
//!  7 authorize      authorize.rs        patient, roles, store 400, 403, 405, 406, 503
//!  8 rate limit     limit.rs            user, route           429
//!  9 upstream       upstream.rs         head, body            429, 413, 400, 502, 504
//! 10 response       response.rs         the answer            never (FHIR answers:
//!                   authorize.rs        FHIR JSON             403, 502)
//! 11 record         record.rs           the record            never
//! ```
//!
//! The refusal of any phase (a [`Refused`]) becomes its response in one place, `rescue.rs`;
//! the gateway is built once from the configuration in `build.rs`.

mod authenticate;
mod authorize;
mod build;
mod early;
mod limit;
mod own_api;
mod record;
mod rescue;
mod response;
mod route;
mod sanitize;
mod upstream;

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, Version};
use http_body::Body as _;
use hyper::body::Incoming;

use crate::body::ResponseBody;
use crate::proxy::Peer;
use crate::ratelimit::{Stage, Subject};
use crate::refused::Refused;
use crate::telemetry::RequestRecord;

pub use build::{Gateway, Identity, Removed};

impl Gateway {
    /// Serves one request from `peer`; never fails: every outcome is a response.
    pub async fn handle(
        self: Arc<Self>,
        peer: Arc<Peer>,
        request: Request<Incoming>,
    ) -> Response<ResponseBody> {
        #[allow(clippy::disallowed_methods)] // the edge: the request starts now
        let start = Instant::now();
        // The edge: unix seconds for every expiry check below.
        let now = (self.clock)();

        // 2. early
        let mut record = early::open(&peer, &self.trusted, &request, start, &mut rand::rng());
        record.at = now;

        let http1 = request.version() < Version::HTTP_2;
        let had_body = !request.body().is_end_stream();
        let mut response = match self.forward(request, &peer, &mut record, now).await {
            Ok(response) => response,
            Err(refused) => {
                let refusal = refused.refusal();
                record.code = Some(refusal.code());
                rescue::log_cause(&refused, &record.request_id);
                let mut response = rescue::respond(refused);
                if response::closes_connection(http1, had_body, refusal) {
                    response::close(&mut response);
                }
                response
            }
        };

        // 10. response
        response::finish(&mut response, &record.request_id);
        record.status = response.status().as_u16();

        // 11. record
        record::attach(
            response,
            record,
            &self.telemetry,
            &self.unrouted,
            self.audit.as_ref(),
        )
    }

    /// Phases 3 to 10 up to the first refusal; `now` is unix seconds.
    async fn forward(
        &self,
        request: Request<Incoming>,
        peer: &Peer,
        record: &mut RequestRecord,
        now: u64,
    ) -> Result<Response<ResponseBody>, Refused> {
        // 3. sanitize. A refused path is logged as sent; a passed one as normalized.
        let keeps_path = self.telemetry.logs_requests() || self.audit.is_some();
        if keeps_path {
            record.path = Some(request.uri().path().to_owned());
        }
        let sanitize::Sanitized {
            path,
            authority,
            host,
        } = self.head.check(&request)?;
        if keeps_path && path != request.uri().path() {
            record.path = Some(path.to_string());
        }

        // 3a. the gateway's own API: never routed, never proxied.
        if own_api::owns(&path) {
            let path = path.into_owned();
            return self.own_api(request, path, &authority, record, now).await;
        }

        // 4. route
        let (target, plan) = self.route(&request, &host, &path, record)?;
        let uri = upstream::upstream_uri(&target, &path, request.uri().query())?;

        // 5. rate limit (anonymous): per client address, before any body is read.
        let mut subject = Subject {
            stage: Stage::Anonymous,
            route: &target.labels.route,
            client: record.client,
            user: None,
            public: target.auth.is_none(),
        };
        limit::deny(&self.limiter.check(&subject).await)?;

        // 6. authenticate: a live session on protected routes.
        let live = match &target.auth {
            Some(auth) => Some(self.authenticate(&request, auth, now).await?),
            None => None,
        };
        record.user = live.as_ref().map(|live| live.user);

        // 7. authorize: the access policy, on routes that carry patient data.
        let authorized = match (&target.data, live.as_deref()) {
            (Some(rule), Some(live)) => {
                // For the audit trail: whose data was asked for, also when the answer is no.
                if self.audit.is_some() {
                    let query = request.uri().query();
                    record.access = Some(self.asked_access(rule, live, &path, query));
                }
                let (method, query) = (request.method(), request.uri().query());
                let browser = authenticate::wants_html(&request);
                self.authorize(rule, live, method, &path, query, browser, now)
                    .await?
            }
            _ => authorize::Authorized::default(),
        };
        if let (Some(_), Some(live), Some(audit)) = (&target.data, live.as_deref(), &self.audit) {
            record.access = Some(self.record_access(live, authorized.allowed.as_ref()));
            // 11, ahead: the decision is on disk before patient data can leave.
            record::audit_decision(audit, record, &target.labels).await?;
        }

        // 8. rate limit (per identity): per user, per route, per user and route.
        let user_id = live.as_ref().map(|live| live.user.to_string());
        subject.user = user_id.as_deref();
        subject.stage = Stage::Identified;
        limit::deny(&self.limiter.check(&subject).await)?;

        // 9. upstream
        let outbound = upstream::Outbound {
            target: &target,
            uri,
            authority,
            plan,
            live: live.as_deref(),
            allowed: authorized.allowed.as_ref(),
        };
        let mut answer = self.upstream(request, outbound, peer, record, now).await?;

        // 10. response, on a FHIR route: what the answer carries is decided before it leaves.
        if let (Some(read), Some(live)) = (&authorized.fhir, live.as_deref()) {
            let allowed = authorized.allowed.as_ref();
            let (response, shown) = self
                .check_fhir_answer(answer.response, read, allowed, live, now)
                .await?;
            answer.response = response;
            if let (Some(shown), Some(_)) = (shown, &self.audit) {
                // A read by id names its patient only in the answer: the end record says
                // whose data left, whole (it no longer leans on the decision record).
                record.access = Some(self.record_access(live, Some(&shown)));
                record.decided = None;
            }
        }

        // 10. response (the route's part; the rest applies to every response in `handle`)
        Ok(response::from_upstream(
            answer,
            &target,
            live.as_deref(),
            now,
        ))
    }
}
