//! Phase 6, authenticate: a live session on every route that asks for one (`auth: session`).
//!
//! Runs after the anonymous rate limit, so a flood of forged tokens is refused before each costs
//! a store read. Reads the session cookie (browsers) or the bearer token (apps, API clients);
//! the session checks themselves (idle timeout, absolute cap, step-up freshness under the
//! route's narrowed lifetimes, revocation) are `Sessions::check`. Decides: hand on the live
//! session, or refuse with 401 and the reason the session ended: a browser navigating to a page
//! is sent to the login page (303) with where it was going; anyone else gets a
//! `WWW-Authenticate: Bearer` challenge (RFC 6750 3, step-up as RFC 9470's
//! `insufficient_user_authentication`). A store that cannot answer refuses (503), never lets
//! the request through; nor does a store that did not answer its last check
//! (`store::reachable`), even where the session is cached.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request};

use crate::auth::login;
use crate::auth::shared;
use crate::own_api::paths;
use crate::refusal::Refusal;
use crate::session::{self, Ended, Live};

use super::build::Gateway;
use crate::refused::Refused;
use crate::settings::RouteAuth;

impl Gateway {
    /// Phase 6: the live session of a protected route, or the refusal that says why not.
    pub(super) async fn authenticate<B>(
        &self,
        request: &Request<B>,
        auth: &RouteAuth,
        now: u64,
    ) -> Result<Arc<Live>, Refused> {
        // A store that stopped answering may hold what would refuse this request (a revoked
        // grant, a disabled account): the cache is no stand-in for it.
        if let Some(store) = self.reachable.unreachable() {
            return Err(Refused::because(
                Refusal::StateUnavailable,
                &format_args!("{store} does not answer"),
            ));
        }
        let presented = session::presented(request.headers());
        let ended = match presented {
            Some((_, token)) => match self.sessions().check(token, &auth.lifetimes, now).await {
                Ok(Ok(live)) => return Ok(live),
                Ok(Err(ended)) => ended,
                Err(error) => return Err(shared::session_failure(error)),
            },
            None => Ended::Missing,
        };
        let page =
            wants_html(request).then(|| request.uri().path_and_query().map_or("/", |p| p.as_str()));
        Err(refused(ended, presented.is_some(), page))
    }
}

/// The refusal for a session that `ended` (or was never presented); `page` is the target a
/// browser was navigating to.
fn refused(ended: Ended, presented: bool, page: Option<&str>) -> Refused {
    let refusal = login::ended_refusal(ended);
    if let Some(target) = page {
        let location = paths::login_to(target, ended.reason());
        if let Ok(location) = HeaderValue::from_str(&location) {
            return Refused::redirect(refusal, location);
        }
    }
    let challenge = match (presented, ended) {
        (false, _) => r#"Bearer realm="wardgate""#.to_owned(),
        (true, Ended::StepUp) => format!(
            r#"Bearer realm="wardgate", error="insufficient_user_authentication", error_description="{}""#,
            ended.reason()
        ),
        (true, _) => format!(
            r#"Bearer realm="wardgate", error="invalid_token", error_description="{}""#,
            ended.reason()
        ),
    };
    Refused::with_header(
        refusal,
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&challenge).unwrap_or_else(|_| HeaderValue::from_static("Bearer")),
    )
}

/// A browser navigating to a page (not a script or an API client).
pub(super) fn wants_html<B>(request: &Request<B>) -> bool {
    (request.method() == Method::GET || request.method() == Method::HEAD)
        && request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusal::Refusal;

    fn challenge(refused: &Refused) -> String {
        let (_, headers) = refused.parts();
        let (name, value) = &headers[0];
        assert_eq!(name, header::WWW_AUTHENTICATE);
        value.to_str().unwrap().to_owned()
    }

    #[test]
    fn an_api_client_is_challenged_with_the_reason() {
        let none = refused(Ended::Missing, false, None);
        assert_eq!(none.refusal(), Refusal::SessionMissing);
        assert_eq!(challenge(&none), r#"Bearer realm="wardgate""#);

        let idle = refused(Ended::Idle, true, None);
        assert_eq!(idle.refusal(), Refusal::SessionIdle);
        assert_eq!(
            challenge(&idle),
            r#"Bearer realm="wardgate", error="invalid_token", error_description="idle""#
        );

        let step_up = refused(Ended::StepUp, true, None);
        assert_eq!(step_up.refusal(), Refusal::StepUpRequired);
        assert_eq!(
            challenge(&step_up),
            r#"Bearer realm="wardgate", error="insufficient_user_authentication", error_description="step-up""#
        );
    }

    #[test]
    fn a_browser_is_sent_to_the_login_page_with_its_target() {
        let refused = refused(Ended::Absolute, true, Some("/api/labs?id=1&x=a b"));
        let response = super::super::rescue::respond(refused);
        assert_eq!(response.status(), http::StatusCode::SEE_OTHER);
        assert_eq!(
            response.headers()[header::LOCATION],
            "/.wardgate/login?return_to=/api/labs%3Fid%3D1%26x%3Da%20b&reason=absolute"
        );
    }

    #[test]
    fn only_a_page_navigation_wants_html() {
        let request = |method: Method, accept: &str| {
            Request::builder()
                .method(method)
                .header(header::ACCEPT, accept)
                .body(())
                .unwrap()
        };
        assert!(wants_html(&request(Method::GET, "text/html,*/*")));
        assert!(wants_html(&request(Method::HEAD, "text/html")));
        assert!(!wants_html(&request(Method::POST, "text/html")));
        assert!(!wants_html(&request(Method::GET, "application/json")));
    }
}
