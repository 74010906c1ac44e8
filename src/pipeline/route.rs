//! Phase 4, route: which upstream serves this request, and the route's own limits.
//!
//! Runs after `sanitize`, on the normalized path and the lower-case host: never the query, so
//! `?x=/admin` cannot pick a route. No match is 404 `WG-ROUTE-001`; ties between routes were
//! refused when the table was built (`route.rs`). The route's rules then apply to the head
//! alone, before any body byte is read: method (405 with the route's `Allow`), content type
//! (415), announced size (413), and injection in the query (400, or a log line in `log` mode).
//! The result is the plan for the body: none, streamed under a limit, or read whole and checked.

use std::sync::Arc;

use http::Request;
use http::header::{self, HeaderValue};
use http_body::Body;

use crate::refusal::Refusal;
use crate::sanitize::injection::Finding;
use crate::sanitize::request::{BodyPlan, RouteRules};
use crate::telemetry::RequestRecord;

use super::build::{Gateway, RouteTarget};
use crate::refused::Refused;

impl Gateway {
    /// Phase 4: the route for `host` and `path`, and the plan for the request's body.
    pub(super) fn route<B: Body>(
        &self,
        request: &Request<B>,
        host: &str,
        path: &str,
        record: &mut RequestRecord,
    ) -> Result<(Arc<RouteTarget>, BodyPlan), Refused> {
        let target = self
            .routes
            .find(Some(host), path)
            .ok_or(Refusal::NoRoute)?
            .clone();
        // From here on, a refusal is counted under the route.
        record.route = Some(target.labels.clone());
        let (plan, finding) = admit(&target.rules, request)?;
        if let Some(finding) = finding {
            log_finding(&record.request_id, &finding);
        }
        Ok((target, plan))
    }
}

/// The route's rules on the head: the body plan, and what `log` mode lets through.
fn admit<B: Body>(
    rules: &RouteRules,
    request: &Request<B>,
) -> Result<(BodyPlan, Option<Finding>), Refused> {
    let plan = rules
        .check_head(
            request.method(),
            request.headers(),
            request.uri().query(),
            !request.body().is_end_stream(),
        )
        .map_err(|refusal| match refusal {
            Refusal::MethodNotAllowed => {
                Refused::with_header(refusal, header::ALLOW, rules.allow_header().clone())
            }
            _ => refusal.into(),
        })?;
    let finding = match request.uri().query() {
        Some(query) => rules.check_query(query)?,
        None => None,
    };
    Ok((plan, finding))
}

/// An injection finding on a route in `log` mode: the field is named, its value never is.
pub(super) fn log_finding(request_id: &HeaderValue, finding: &Finding) {
    tracing::warn!(
        target: "wardgate::security",
        request_id = request_id.to_str().unwrap_or_default(),
        code = Refusal::Injection(finding.attack).code(),
        field = %finding.field,
        "injection pattern let through (injection.mode: log)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sanitize::injection::Attack;
    use http::Method;
    use http_body_util::Empty;

    fn request(method: Method, uri: &str) -> Request<Empty<bytes::Bytes>> {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Empty::new())
            .unwrap()
    }

    fn rules() -> RouteRules {
        RouteRules::new(&Default::default(), &Default::default())
    }

    #[test]
    fn a_method_the_route_refuses_is_told_what_it_allows() {
        let refused = admit(&rules(), &request(Method::TRACE, "/api")).unwrap_err();
        let (refusal, headers) = refused.parts();
        assert_eq!(refusal, Refusal::MethodNotAllowed);
        assert_eq!(headers[0].0, header::ALLOW);
        assert_eq!(headers[0].1, *rules().allow_header());
    }

    #[test]
    fn the_query_is_inspected_before_any_body() {
        let refused = admit(
            &rules(),
            &request(Method::GET, "/api?id=1%27%20OR%20%271%27=%271"),
        )
        .unwrap_err();
        assert_eq!(refused.refusal(), Refusal::Injection(Attack::SqlInjection));
        let (plan, finding) = admit(&rules(), &request(Method::GET, "/api?id=42")).unwrap();
        assert!(matches!(plan, BodyPlan::Empty));
        assert!(finding.is_none());
    }
}
