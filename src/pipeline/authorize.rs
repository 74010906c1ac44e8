//! Phase 7, authorize: may this person see this kind of data about this patient.
//!
//! Runs after `authenticate` (it needs the identity) and before the per-identity rate limit and
//! `upstream`, on routes that name a data category (`routes[].data`); a route without one
//! carries no patient data and passes. Reads the patient id where the route says it is (a path
//! parameter or a query parameter of the request as sent, before any rewrite), asks the policy
//! what the person's roles allow (`policy`), and only then the store: whether they are on the
//! patient's care team (when that suffices), and which active grant covers the request. Decides:
//! hand on the decision (the upstream learns its basis in the assertion), or refuse: 400
//! `WG-POLICY-004` without a valid patient id, 403 `WG-POLICY-001` (with a `Link` to the access
//! request API; for a browser navigating, the refusal page links to the request page with the
//! patient and category filled in), `-002` or `-003`, 503 `WG-POLICY-005` when the store cannot
//! answer (nothing passes on a failure).

use http::header::{self, HeaderValue};

use crate::own_api::{pages, paths};
use crate::policy::{self, Basis, Category, DataRule, Denial};
use crate::refusal::Refusal;
use crate::refused::Refused;
use crate::session::Live;

use super::build::Gateway;

/// A decision that lets the request through: whose data, which kind, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Allowed {
    pub(super) patient: String,
    pub(super) category: Category,
    pub(super) basis: Basis,
}

impl Gateway {
    /// Phase 7 on a route with `rule`: the decision, or the refusal that says why not
    /// (`browser`: a page navigation, refused with a page).
    pub(super) async fn authorize(
        &self,
        rule: &DataRule,
        live: &Live,
        path: &str,
        query: Option<&str>,
        browser: bool,
        now: u64,
    ) -> Result<Allowed, Refused> {
        let Some(access) = &self.policy else {
            // `config::load` refuses a route with `data` and no policy.
            return Err(Refusal::PolicyUnavailable.into());
        };
        let patient = rule
            .patient
            .find(path, query)
            .ok_or(Refusal::PolicyNoPatient)?;
        let asked = browser.then(|| (patient.as_str(), access.category_name(rule.category)));
        let refuse = |denial| denied(denial, asked);
        let plan = access.plan(&live.roles, rule.category).map_err(refuse)?;
        let relations = &self.relations;
        let on_care_team = plan.care_team_suffices
            && relations
                .on_care_team(live.user, &patient, now)
                .await
                .map_err(unavailable)?;
        let grant = if plan.care_team_suffices && on_care_team {
            None
        } else {
            let category = access.category_name(rule.category);
            relations
                .grant_for(live.user, &patient, category, now)
                .await
                .map_err(unavailable)?
        };
        let basis = policy::decide(plan, on_care_team, grant).map_err(refuse)?;
        Ok(Allowed {
            patient,
            category: rule.category,
            basis,
        })
    }
}

fn unavailable(error: crate::identity::StoreError) -> Refused {
    Refused::because(Refusal::PolicyUnavailable, &error)
}

/// The fixed refusal of a denial; the one a request can change says where to ask, and to a
/// browser that `asked` for (patient, category), on a page that links to the request form.
fn denied(denial: Denial, asked: Option<(&str, &str)>) -> Refused {
    match denial {
        Denial::Operator => Refusal::PolicyOperator.into(),
        Denial::NeverAllowed => Refusal::PolicyNeverAllowed.into(),
        Denial::NeedsGrant => {
            let refused = match asked {
                Some((patient, category)) => pages::needs_grant(patient, category),
                None => Refusal::PolicyNeedsGrant.into(),
            };
            let link = format!("<{}>; rel=\"access-request\"", paths::ACCESS_REQUESTS_API);
            match HeaderValue::from_str(&link) {
                Ok(link) => Refused {
                    headers: vec![(header::LINK, link)],
                    ..refused
                },
                Err(_) => refused,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_denial_has_its_refusal_and_only_a_grant_can_change_says_where_to_ask() {
        assert_eq!(
            denied(Denial::Operator, None).refusal(),
            Refusal::PolicyOperator
        );
        assert_eq!(
            denied(Denial::NeverAllowed, None).refusal(),
            Refusal::PolicyNeverAllowed
        );
        let needs_grant = denied(Denial::NeedsGrant, None);
        let (refusal, headers) = needs_grant.parts();
        assert_eq!(refusal, Refusal::PolicyNeedsGrant);
        let link = headers
            .iter()
            .find(|(name, _)| name == header::LINK)
            .unwrap();
        assert!(
            link.1
                .to_str()
                .unwrap()
                .starts_with(&format!("<{}>", paths::ACCESS_REQUESTS_API))
        );
        assert!(denied(Denial::Operator, None).parts().1.is_empty());
        assert!(!needs_grant.html);
        let page = denied(Denial::NeedsGrant, Some(("p7", "labs")));
        assert!(page.html && page.body.is_some());
        assert_eq!(page.parts().1.len(), 1, "the Link header too");
    }
}
