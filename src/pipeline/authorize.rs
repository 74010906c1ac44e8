//! Phase 7, authorize: may this person see this kind of data about this patient. And, on FHIR
//! routes, the part of phase 10 that checks what the answer carries before it leaves.
//!
//! Runs after `authenticate` (it needs the identity) and before the per-identity rate limit and
//! `upstream`, on routes that carry patient data (`routes[].data`, or `fhir: true`); any other
//! route passes. A REST route's patient id is where the route says (a path parameter or a query
//! parameter of the request as sent, before any rewrite) and its category is the route's. A FHIR
//! route's request is read by `policy::fhir` (refused there with `WG-FHIR-001`..`-006`, and 405
//! for anything but `GET`): it names one patient and the categories it may return, or leaves
//! the patient to the answer (a read by id), or asks for no patient data. For each category
//! the policy says what the person's roles allow, and only then the store is asked: whether
//! they are on the patient's care team (when that suffices), and which active grant covers the
//! request. Decides: hand on the decisions (the upstream learns their basis in the assertion),
//! or refuse: 400 `WG-POLICY-004` without a valid patient id, 403 `WG-POLICY-001` (with a `Link`
//! to the access request API; for a browser navigating, the refusal page links to the request
//! page with the patient and category filled in), `-002`, `-003`, `WG-FHIR-003` (a search
//! without `category=` that could return a category the person may not see), 503
//! `WG-POLICY-005` when the store cannot answer (nothing passes on a failure).
//!
//! The FHIR answer ([`Gateway::check_fhir_answer`]) is read whole, up to
//! `policy.fhir.max_answer`, as JSON (else 502 `WG-FHIR-008`); every resource in it is decided
//! the same way, once per patient and category. A read whose resource is not allowed is refused
//! (403 `WG-FHIR-007`); a search answer loses the entries that are not allowed.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response};
use serde_json::Value;

use crate::body::{self, ResponseBody, Unread};
use crate::identity::UserId;
use crate::own_api::{pages, paths};
use crate::policy::fhir::{self, Carries, FhirMap, FhirRead, FhirRefusal, ReadKind};
use crate::policy::{self, AccessPolicy, Basis, Category, DataRule, Denial};
use crate::refusal::Refusal;
use crate::refused::Refused;
use crate::sanitize::request::media_type;
use crate::session::Live;
use crate::store::relations::Relations;

use super::build::Gateway;

/// A decision that lets the request through: whose data, and why for each kind asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Allowed {
    pub(super) patient: String,
    pub(super) decisions: Vec<(Category, Basis)>,
}

impl Allowed {
    /// The distinct grants the decisions rest on.
    pub(super) fn grants(&self) -> Vec<String> {
        let mut grants: Vec<String> = self
            .decisions
            .iter()
            .filter_map(|(_, basis)| basis.grant())
            .map(|id| id.to_string())
            .collect();
        grants.sort();
        grants.dedup();
        grants
    }
}

/// What phase 7 hands on: the decision the upstream learns, and on a FHIR route what the
/// answer must be checked for.
#[derive(Debug, Default)]
pub(super) struct Authorized {
    pub(super) allowed: Option<Allowed>,
    pub(super) fhir: Option<FhirRead>,
}

/// One decision: the basis that allows, or the denial.
type Made = Result<Basis, Denial>;

/// The decisions of one request for one person, per patient and category: each is made once.
struct Decisions<'a> {
    relations: &'a dyn Relations,
    access: &'a AccessPolicy,
    user: UserId,
    roles: &'a [String],
    now: u64,
    /// Per patient, the decisions made for their categories (looked up by `&str`: no copy of
    /// the id on the request path).
    made: HashMap<String, Vec<(Category, Made)>>,
}

impl Gateway {
    /// Phase 7 on a route with `rule`: the decision, or the refusal that says why not
    /// (`browser`: a page navigation, refused with a page).
    #[allow(clippy::too_many_arguments)] // the request's parts the phase reads, each once
    pub(super) async fn authorize(
        &self,
        rule: &DataRule,
        live: &Live,
        method: &Method,
        path: &str,
        query: Option<&str>,
        browser: bool,
        now: u64,
    ) -> Result<Authorized, Refused> {
        let Some(access) = &self.policy else {
            // `config::load` refuses a route with `data` and no policy.
            return Err(Refusal::PolicyUnavailable.into());
        };
        let (patient, categories, narrowed, fhir) = match rule {
            DataRule::Rest { category, patient } => {
                let patient = patient.find(path, query).ok_or(Refusal::PolicyNoPatient)?;
                (patient, vec![*category], true, None)
            }
            DataRule::Fhir { base } => {
                // `config::load` refuses a FHIR route without `policy.fhir`.
                let map = access.fhir.as_ref().ok_or(Refusal::PolicyUnavailable)?;
                if method != Method::GET {
                    return Err(Refused::method_not_allowed("GET"));
                }
                let segments: Vec<&str> = path
                    .get(1..)
                    .unwrap_or_default()
                    .split('/')
                    .skip(*base)
                    .collect();
                let read = map.read(&segments, query).map_err(fhir_refused)?;
                match &read.kind {
                    ReadKind::Patient {
                        patient,
                        categories,
                        narrowed,
                    } => (patient.clone(), categories.clone(), *narrowed, Some(read)),
                    ReadKind::Open | ReadKind::ByAnswer => {
                        return Ok(Authorized {
                            allowed: None,
                            fhir: Some(read),
                        });
                    }
                }
            }
        };
        let decisions = Decisions::new(self.relations.as_ref(), access, live, now);
        let mut allowed = Vec::with_capacity(categories.len());
        for category in categories {
            // The categories of one request differ: nothing to keep for later.
            match decisions.make(&patient, category).await? {
                Ok(basis) => allowed.push((category, basis)),
                // Some of what a search without `category=` could return is not allowed.
                Err(Denial::NeedsGrant | Denial::NeverAllowed) if !narrowed => {
                    return Err(Refusal::FhirNeedsCategory.into());
                }
                Err(denial) => {
                    let asked = browser.then(|| (patient.as_str(), access.category_name(category)));
                    return Err(denied(denial, asked));
                }
            }
        }
        Ok(Authorized {
            allowed: Some(Allowed {
                patient,
                decisions: allowed,
            }),
            fhir,
        })
    }

    /// Phase 10 on a FHIR route: the answer, once every resource in it has been decided; a
    /// search answer without the entries that are not allowed. With it, for a read decided on
    /// its answer (a read by id), whose data it is and on what basis it may be shown.
    pub(super) async fn check_fhir_answer(
        &self,
        response: Response<ResponseBody>,
        read: &FhirRead,
        authorized: Option<&Allowed>,
        live: &Live,
        now: u64,
    ) -> Result<(Response<ResponseBody>, Option<Allowed>), Refused> {
        let (Some(access), Some(map)) = (
            self.policy.as_deref(),
            self.policy.as_ref().and_then(|p| p.fhir.as_ref()),
        ) else {
            return Err(Refusal::PolicyUnavailable.into());
        };
        let (mut parts, body) = response.into_parts();
        let unchecked = |cause: &str| Refused::because(Refusal::FhirAnswerUnchecked, &cause);
        let encoded = parts
            .headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
        if encoded {
            return Err(unchecked("the FHIR answer is content-encoded"));
        }
        let bytes =
            body::read_limited(body, map.max_answer)
                .await
                .map_err(|unread| match unread {
                    Unread::TooLarge => unchecked("the FHIR answer is larger than max_answer"),
                    Unread::Failed => unchecked("the FHIR answer stalled or broke off"),
                })?;
        if bytes.is_empty() {
            return Ok((Response::from_parts(parts, ResponseBody::from(bytes)), None));
        }
        let json = matches!(
            media_type(&parts.headers).as_deref(),
            Some("application/fhir+json" | "application/json")
        );
        let answer: Value = match serde_json::from_slice(&bytes) {
            Ok(answer) if json => answer,
            _ => return Err(unchecked("the FHIR answer is not FHIR JSON")),
        };
        let mut decisions = Decisions::new(self.relations.as_ref(), access, live, now);
        if let Some(allowed) = authorized {
            let made = allowed.decisions.iter().map(|(c, basis)| (*c, Ok(*basis)));
            decisions
                .made
                .insert(allowed.patient.clone(), made.collect());
        }
        if !(read.lists && fhir::is_list(&answer)) {
            let carries = map.classify(&answer);
            if !decisions.shown(&carries).await? {
                return Err(Refusal::FhirNotShown.into());
            }
            let shown = match (&carries, authorized) {
                (Carries::Patient { patient, .. }, None) => decisions.allowed(patient),
                _ => None,
            };
            return Ok((
                Response::from_parts(parts, ResponseBody::from(bytes)),
                shown,
            ));
        }
        let mut answer = answer;
        let mut shown = Vec::new();
        for entry in answer
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let carries = entry
                .get("resource")
                .map_or(Carries::Unknown, |resource| map.classify(resource));
            // A search names one patient: another's entries are the server's mistake, shown to
            // no one (the request's audit record names only the patient it asked for).
            let asked = match (&carries, authorized) {
                (Carries::Patient { patient, .. }, Some(allowed)) => *patient == allowed.patient,
                _ => true,
            };
            shown.push(asked && decisions.shown(&carries).await?);
        }
        if !fhir::filter_bundle(&mut answer, &shown) {
            return Ok((Response::from_parts(parts, ResponseBody::from(bytes)), None));
        }
        let filtered = Bytes::from(answer.to_string());
        parts.headers.remove(header::ETAG);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(filtered.len()));
        Ok((
            Response::from_parts(parts, ResponseBody::from(filtered)),
            None,
        ))
    }
}

impl<'a> Decisions<'a> {
    fn new(
        relations: &'a dyn Relations,
        access: &'a AccessPolicy,
        live: &'a Live,
        now: u64,
    ) -> Self {
        Self {
            relations,
            access,
            user: live.user,
            roles: &live.roles,
            now,
            made: HashMap::new(),
        }
    }

    /// The decision for `patient`'s `category`, made the first time it is asked, then kept.
    async fn decide(&mut self, patient: &str, category: Category) -> Result<Made, Refused> {
        let mut known = self.made.get(patient).into_iter().flatten();
        if let Some((_, made)) = known.find(|(c, _)| *c == category) {
            return Ok(*made);
        }
        let made = self.make(patient, category).await?;
        match self.made.get_mut(patient) {
            Some(known) => known.push((category, made)),
            None => {
                self.made.insert(patient.to_owned(), vec![(category, made)]);
            }
        }
        Ok(made)
    }

    /// The decision for `patient`'s `category`, asking the store only when the roles leave it
    /// open.
    async fn make(&self, patient: &str, category: Category) -> Result<Made, Refused> {
        let (user, now) = (self.user, self.now);
        Ok(match self.access.plan(self.roles, category) {
            Err(denial) => Err(denial),
            Ok(plan) => {
                let on_care_team = plan.care_team_suffices
                    && self
                        .relations
                        .on_care_team(user, patient, now)
                        .await
                        .map_err(unavailable)?
                        .is_some();
                let grant = if plan.care_team_suffices && on_care_team {
                    None
                } else {
                    let name = self.access.category_name(category);
                    self.relations
                        .grant_for(user, patient, name, now)
                        .await
                        .map_err(unavailable)?
                };
                policy::decide(plan, on_care_team, grant)
            }
        })
    }

    /// What was decided for `patient`, when every decision made for them allows.
    fn allowed(&self, patient: &str) -> Option<Allowed> {
        let made = self.made.get(patient)?;
        let decisions = made
            .iter()
            .map(|(category, made)| made.ok().map(|basis| (*category, basis)))
            .collect::<Option<Vec<_>>>()?;
        Some(Allowed {
            patient: patient.to_owned(),
            decisions,
        })
    }

    /// Whether a resource that `carries` this may be shown: open data always, a patient's
    /// data when every category of it is allowed, unknown data never.
    async fn shown(&mut self, carries: &Carries) -> Result<bool, Refused> {
        match carries {
            Carries::Open => Ok(true),
            Carries::Unknown => Ok(false),
            Carries::Patient {
                patient,
                categories,
            } => {
                for category in categories {
                    if self.decide(patient, *category).await?.is_err() {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        }
    }
}

/// The SMART v2 scopes of the decided categories (none without `policy.fhir`).
pub(super) fn scopes(map: Option<&FhirMap>, allowed: &Allowed) -> Vec<String> {
    let Some(map) = map else {
        return Vec::new();
    };
    let mut scopes: Vec<String> = allowed
        .decisions
        .iter()
        .flat_map(|(category, _)| map.scopes(*category).iter().cloned())
        .collect();
    scopes.sort();
    scopes.dedup();
    scopes
}

fn unavailable(error: crate::identity::StoreError) -> Refused {
    Refused::because(Refusal::PolicyUnavailable, &error)
}

fn fhir_refused(refusal: FhirRefusal) -> Refused {
    match refusal {
        FhirRefusal::Unsupported => Refusal::FhirUnsupported,
        FhirRefusal::NoPatient => Refusal::FhirNoPatient,
        FhirRefusal::Reaches => Refusal::FhirReaches,
        FhirRefusal::Unmapped => Refusal::FhirUnmapped,
        FhirRefusal::Format => Refusal::FhirFormat,
    }
    .into()
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
    use crate::identity::StoreError;
    use crate::policy::GrantUse;
    use crate::policy::grants::{AccessRequest, GrantError, GrantId};
    use crate::store::Pending;
    use crate::store::relations::{CareTeamLink, Change, Holds};

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

    /// A relations store that cannot answer.
    struct Down;

    fn down<'a, T: Send + 'a>() -> Pending<'a, T> {
        Box::pin(async { Err(StoreError::Storage("connection refused".into())) })
    }

    impl Relations for Down {
        fn link(&self, _: CareTeamLink) -> Pending<'_, ()> {
            down()
        }
        fn import(&self, _: Vec<CareTeamLink>) -> Pending<'_, usize> {
            down()
        }
        fn unlink(&self, _: UserId, _: &str) -> Pending<'_, bool> {
            down()
        }
        fn links(&self, _: Option<UserId>) -> Pending<'_, Vec<CareTeamLink>> {
            down()
        }
        fn on_care_team(&self, _: UserId, _: &str, _: u64) -> Pending<'_, Option<Holds>> {
            down()
        }
        fn create_request(&self, _: AccessRequest) -> Pending<'_, ()> {
            down()
        }
        fn request(&self, _: GrantId) -> Pending<'_, Option<AccessRequest>> {
            down()
        }
        fn requests(&self) -> Pending<'_, Vec<AccessRequest>> {
            down()
        }
        fn requests_of(&self, _: UserId) -> Pending<'_, Vec<AccessRequest>> {
            down()
        }
        fn update_request(
            &self,
            _: GrantId,
            _: Change,
        ) -> Pending<'_, Result<AccessRequest, GrantError>> {
            down()
        }
        fn grant_for(&self, _: UserId, _: &str, _: &str, _: u64) -> Pending<'_, Option<GrantUse>> {
            down()
        }
    }

    #[tokio::test]
    async fn a_store_that_cannot_answer_lets_nothing_through_and_roles_alone_need_no_store() {
        let policy = serde_saphyr::from_str::<crate::policy::PolicyConfig>(
            "categories: { labs: {}, notes: { sensitive: true } }\n\
             roles: { physician: { care_team: [labs], request: [notes] }, ops: { operator: true } }\n",
        )
        .unwrap()
        .compile()
        .unwrap();
        let (labs, notes) = (
            policy.category("labs").unwrap(),
            policy.category("notes").unwrap(),
        );
        let physician = ["physician".to_owned()];
        let mut decisions = Decisions {
            relations: &Down,
            access: &policy,
            user: UserId::from_bytes([1; 16]),
            roles: &physician,
            now: 1_800_000_000,
            made: HashMap::new(),
        };
        for category in [labs, notes] {
            let refused = decisions.decide("p1", category).await.unwrap_err();
            assert_eq!(refused.refusal(), Refusal::PolicyUnavailable);
        }
        let carries = Carries::Patient {
            patient: "p1".into(),
            categories: vec![labs],
        };
        let refused = decisions.shown(&carries).await.unwrap_err();
        assert_eq!(refused.refusal().code(), "WG-POLICY-005");
        assert!(decisions.shown(&Carries::Open).await.unwrap());
        let operator = ["ops".to_owned()];
        decisions.roles = &operator;
        assert_eq!(
            decisions.decide("p1", labs).await.unwrap(),
            Err(Denial::Operator),
            "decided by the roles, before any store is asked"
        );
    }

    #[test]
    fn each_fhir_refusal_has_its_code() {
        for (refusal, code) in [
            (FhirRefusal::Unsupported, "WG-FHIR-001"),
            (FhirRefusal::NoPatient, "WG-FHIR-002"),
            (FhirRefusal::Reaches, "WG-FHIR-004"),
            (FhirRefusal::Unmapped, "WG-FHIR-005"),
            (FhirRefusal::Format, "WG-FHIR-006"),
        ] {
            assert_eq!(fhir_refused(refusal).refusal().code(), code);
        }
    }
}
