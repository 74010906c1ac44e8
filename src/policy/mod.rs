//! Access policy: may this person see this kind of data about this patient.
//!
//! **The threat.** Anyone with a login reading any patient's record: a colleague curious about a
//! neighbour, a specialist browsing data outside their part of the care ("a dermatologist
//! shouldn't see the results of a patient's blood test without a prior access request"), the
//! people who run the system reading what they only administer, a stolen session used to sweep
//! the whole patient list.
//!
//! **The rule.** Default deny. Every patient route names its data category and where the patient
//! id is (`routes[].data`, `routes[].patient`). A role says, per category, what a person with
//! that role gets: `care_team` (for patients whose care team they are on), `request` (only
//! through an approved access grant), or nothing (no request possible). A person's access is the
//! best any of their roles gives. A `sensitive` category needs a grant even for the care team.
//! Operator roles (`operator: true`) manage the gateway and never see patient data: the config
//! refuses an operator role with a category or with approval rights, and a person holding any
//! operator role is refused on every patient route, whatever their other roles. Grants are
//! asked for, approved by others and time-boxed ([`grants`]).
//!
//! ```text
//!   roles ── any operator role ──────────────────────────────▶ WG-POLICY-003
//!     │ ── best access for the category is none ─────────────▶ WG-POLICY-002
//!     ▼
//!   care_team access, category not sensitive, on the care team ▶ allowed (care team)
//!     │ ── an active grant covers patient and category ──────▶ allowed (the grant)
//!     ▼
//!   WG-POLICY-001 (ask for access: the grant request API)
//! ```
//!
//! **The standard.** HIPAA 164.312(a)(1) (access control), 164.308(a)(4) (information access
//! management) and 164.502(b) (minimum necessary); OWASP ASVS 5 V8 (authorization: deny by
//! default, enforced at a trusted service layer); the "break the glass" and purpose-of-use
//! vocabulary of HL7 (`TREAT`, `ETREAT`).

pub mod fhir;
pub mod grants;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::sanitize::injection::query_pairs;
use crate::units::HumanDuration;
use grants::GrantId;

/// The `policy:` section of the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The kinds of patient data routes carry, e.g. `labs`, `notes`, `mental-health`.
    pub categories: BTreeMap<String, CategoryConfig>,
    /// What each role gets, per category. A role not named here gets nothing.
    pub roles: BTreeMap<String, RoleConfig>,
    #[serde(default)]
    pub grants: GrantsConfig,
    /// Emergency access without an approval: off unless configured.
    #[serde(default)]
    pub break_glass: Option<BreakGlassConfig>,
    /// The data category of each FHIR resource type, for routes with `fhir: true`.
    #[serde(default)]
    pub fhir: Option<fhir::FhirConfig>,
}

/// `policy.break_glass`: who may open a patient's record in an emergency, and for how long.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassConfig {
    /// The roles that may break the glass (never an operator role).
    pub roles: Vec<String>,
    /// How long an emergency access lasts.
    #[serde(default = "default_break_glass_duration")]
    pub duration: HumanDuration,
    /// The second factor must have been proven this recently.
    #[serde(default = "default_break_glass_reauth")]
    pub reauth_within: HumanDuration,
    /// The reason codes a person picks from (plus free text).
    pub reasons: Vec<String>,
    /// Where every break-glass use is announced at once: a POST of a JSON summary to `path`
    /// on one of `upstreams` (its TLS and timeouts).
    #[serde(default)]
    pub alert: Option<HookConfig>,
}

/// A webhook in the config: a path on one of `upstreams` (break-glass alerts, the audit
/// trail's checkpoints; see `hook`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    pub upstream: String,
    pub path: String,
}

fn default_break_glass_duration() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}

fn default_break_glass_reauth() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryConfig {
    /// Needs a grant even for the patient's care team.
    #[serde(default)]
    pub sensitive: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// Categories the role may see for patients whose care team the person is on.
    #[serde(default)]
    pub care_team: Vec<String>,
    /// Categories the role may only see through an approved grant.
    #[serde(default)]
    pub request: Vec<String>,
    /// The role may approve or deny other people's access requests.
    #[serde(default)]
    pub approve: bool,
    /// The role manages the gateway: it may hold no category and approve nothing.
    #[serde(default)]
    pub operator: bool,
    /// The role reviews break-glass uses (a privacy officer); it sees who opened which record
    /// and why, never the data.
    #[serde(default)]
    pub review: bool,
}

/// `policy.grants`: how access requests and grants work.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrantsConfig {
    /// The longest a grant may last.
    pub max_duration: HumanDuration,
    /// How long a request waits for its approvals before it expires.
    pub pending_ttl: HumanDuration,
    /// Approvals a request needs, none of them the requester's.
    pub approvals: u32,
}

impl Default for GrantsConfig {
    fn default() -> Self {
        Self {
            max_duration: HumanDuration(Duration::from_secs(24 * 3600)),
            pending_ttl: HumanDuration(Duration::from_secs(3600)),
            approvals: 1,
        }
    }
}

/// A policy setting the operator must fix; `key` is relative to `policy`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("policy.{key}: {message}")]
pub struct PolicyError {
    pub key: String,
    pub message: String,
}

fn refuse<T>(key: impl Into<String>, message: impl Into<String>) -> Result<T, PolicyError> {
    Err(PolicyError {
        key: key.into(),
        message: message.into(),
    })
}

/// Names of categories and roles: they appear in URLs, logs, tokens and SMART scopes.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl PolicyConfig {
    /// The checked policy.
    pub fn compile(&self) -> Result<AccessPolicy, PolicyError> {
        if self.categories.is_empty() {
            return refuse("categories", "name at least one data category");
        }
        let mut categories = Vec::new();
        for (name, category) in &self.categories {
            if !valid_name(name) {
                return refuse(
                    format!("categories.{name}"),
                    "a category name is 1 to 64 letters, digits, `-` or `_`",
                );
            }
            categories.push(CategoryRule {
                name: name.clone(),
                sensitive: category.sensitive,
            });
        }
        let index = |role: &str, list: &str, name: &str| {
            categories
                .iter()
                .position(|c| c.name == name)
                .ok_or_else(|| PolicyError {
                    key: format!("roles.{role}.{list}"),
                    message: format!("`{name}` is not one of policy.categories"),
                })
        };
        let mut roles = RoleRules::default();
        for (name, role) in &self.roles {
            if !valid_name(name) {
                return refuse(
                    format!("roles.{name}"),
                    "a role name is 1 to 64 letters, digits, `-` or `_`",
                );
            }
            if role.operator && (!role.care_team.is_empty() || !role.request.is_empty()) {
                return refuse(
                    format!("roles.{name}"),
                    "an operator role manages the gateway and may hold no data category",
                );
            }
            if role.operator && role.approve {
                return refuse(
                    format!("roles.{name}.approve"),
                    "an operator role may not approve access to patient data",
                );
            }
            let mut access = vec![Access::None; categories.len()];
            for category in &role.request {
                access[index(name, "request", category)?] = Access::Request;
            }
            for category in &role.care_team {
                access[index(name, "care_team", category)?] = Access::CareTeam;
            }
            roles.insert(
                name.clone(),
                RoleRule {
                    access,
                    approve: role.approve,
                    operator: role.operator,
                    review: role.review,
                },
            );
        }
        let grants = &self.grants;
        if grants.approvals == 0 {
            return refuse("grants.approvals", "at least 1: a grant needs an approval");
        }
        if grants.max_duration.0.as_secs() == 0 {
            return refuse("grants.max_duration", "must be at least 1s");
        }
        if grants.pending_ttl.0.as_secs() == 0 {
            return refuse("grants.pending_ttl", "must be at least 1s");
        }
        let break_glass = match &self.break_glass {
            Some(config) => Some(break_glass_rules(config, &roles)?),
            None => None,
        };
        let mut policy = AccessPolicy {
            categories,
            roles,
            break_glass,
            grants: GrantRules {
                max_duration: grants.max_duration.0.as_secs(),
                pending_ttl: grants.pending_ttl.0.as_secs(),
                approvals: grants.approvals,
            },
            fhir: None,
        };
        if let Some(config) = &self.fhir {
            policy.fhir = Some(config.compile(&policy)?);
        }
        Ok(policy)
    }
}

fn break_glass_rules(
    config: &BreakGlassConfig,
    roles: &RoleRules,
) -> Result<BreakGlassRules, PolicyError> {
    if config.roles.is_empty() {
        return refuse(
            "break_glass.roles",
            "name the roles that may break the glass",
        );
    }
    for role in &config.roles {
        match roles.get(role) {
            None => {
                return refuse(
                    "break_glass.roles",
                    format!("`{role}` is not one of policy.roles"),
                );
            }
            Some(rule) if rule.operator => {
                return refuse(
                    "break_glass.roles",
                    format!("`{role}` is an operator role: operators never see patient data"),
                );
            }
            Some(_) => {}
        }
    }
    if config.reasons.is_empty() || !config.reasons.iter().all(|r| valid_name(r)) {
        return refuse(
            "break_glass.reasons",
            "list the reason codes (letters, digits, `-`, `_`) a person picks from",
        );
    }
    let (duration, reauth) = (
        config.duration.0.as_secs(),
        config.reauth_within.0.as_secs(),
    );
    if duration == 0 {
        return refuse("break_glass.duration", "must be at least 1s");
    }
    if reauth == 0 {
        return refuse("break_glass.reauth_within", "must be at least 1s");
    }
    Ok(BreakGlassRules {
        roles: config.roles.clone(),
        duration,
        reauth_within: reauth,
        reasons: config.reasons.clone(),
    })
}

/// `policy.break_glass`, checked, in seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakGlassRules {
    roles: Vec<String>,
    pub duration: u64,
    pub reauth_within: u64,
    pub reasons: Vec<String>,
}

impl BreakGlassRules {
    /// Whether a second factor proven at `auth_time` is recent enough at `now`.
    pub fn fresh(&self, auth_time: u64, now: u64) -> bool {
        now.saturating_sub(auth_time) <= self.reauth_within
    }
}

/// What a role gets for one category; the order is "more".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Access {
    None,
    Request,
    CareTeam,
}

struct CategoryRule {
    name: String,
    sensitive: bool,
}

struct RoleRule {
    /// Per category, in the order of [`AccessPolicy::categories`].
    access: Vec<Access>,
    approve: bool,
    operator: bool,
    review: bool,
}

/// A data category of the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Category(usize);

/// How access requests and grants work, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantRules {
    pub max_duration: u64,
    pub pending_ttl: u64,
    pub approvals: u32,
}

/// The rules of each role, looked up on every patient request (a fast hash: role names come
/// from the config, not from clients).
type RoleRules = foldhash::HashMap<String, RoleRule>;

/// The compiled policy.
pub struct AccessPolicy {
    categories: Vec<CategoryRule>,
    roles: RoleRules,
    pub grants: GrantRules,
    pub break_glass: Option<BreakGlassRules>,
    /// `policy.fhir`, for routes with `fhir: true`.
    pub fhir: Option<fhir::FhirMap>,
}

/// Why a person may see the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    CareTeam,
    Grant(GrantId),
    /// An emergency access opened by the person themselves (break-glass).
    BreakGlass(GrantId),
}

impl Basis {
    /// HL7's purpose of use: treatment, or emergency treatment.
    pub fn purpose_of_use(self) -> &'static str {
        purpose_of_use([self])
    }

    pub fn grant(self) -> Option<GrantId> {
        match self {
            Basis::CareTeam => None,
            Basis::Grant(id) | Basis::BreakGlass(id) => Some(id),
        }
    }
}

/// The purpose of use of a request whose decisions rest on `bases`: emergency treatment when
/// any of them is a break-glass access.
pub fn purpose_of_use(bases: impl IntoIterator<Item = Basis>) -> &'static str {
    if bases
        .into_iter()
        .any(|basis| matches!(basis, Basis::BreakGlass(_)))
    {
        "ETREAT"
    } else {
        "TREAT"
    }
}

/// An active grant that covers a request: its id, whether it is a break-glass access, and when
/// it ends (unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantUse {
    pub id: GrantId,
    pub emergency: bool,
    pub until: u64,
}

/// Why a person may not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// They hold an operator role.
    Operator,
    /// None of their roles gives this category at all: no request is possible.
    NeverAllowed,
    /// Not on the care team (or the category is sensitive, or their roles only allow it on
    /// request) and no grant covers it: they may ask for one.
    NeedsGrant,
}

/// What the store must be asked before the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Being on the patient's care team is enough.
    pub care_team_suffices: bool,
}

impl AccessPolicy {
    pub fn category(&self, name: &str) -> Option<Category> {
        self.categories
            .iter()
            .position(|c| c.name == name)
            .map(Category)
    }

    pub fn category_name(&self, category: Category) -> &str {
        &self.categories[category.0].name
    }

    fn rules<'a>(&'a self, roles: &'a [String]) -> impl Iterator<Item = &'a RoleRule> + 'a {
        roles.iter().filter_map(|role| self.roles.get(role))
    }

    pub fn is_operator(&self, roles: &[String]) -> bool {
        self.rules(roles).any(|rule| rule.operator)
    }

    /// Whether these roles may approve other people's requests.
    pub fn may_approve(&self, roles: &[String]) -> bool {
        !self.is_operator(roles) && self.rules(roles).any(|rule| rule.approve)
    }

    fn access(&self, roles: &[String], category: Category) -> Access {
        self.rules(roles)
            .map(|rule| rule.access[category.0])
            .max()
            .unwrap_or(Access::None)
    }

    /// Whether these roles may break the glass.
    pub fn may_break_glass(&self, roles: &[String]) -> bool {
        !self.is_operator(roles)
            && self
                .break_glass
                .as_ref()
                .is_some_and(|rules| roles.iter().any(|r| rules.roles.contains(r)))
    }

    /// Whether these roles review break-glass uses.
    pub fn may_review(&self, roles: &[String]) -> bool {
        self.rules(roles).any(|rule| rule.review)
    }

    /// The categories an emergency access of these roles opens: all they could ask for.
    pub fn requestable(&self, roles: &[String]) -> Vec<String> {
        (0..self.categories.len())
            .map(Category)
            .filter(|category| self.may_request(roles, *category))
            .map(|category| self.category_name(category).to_owned())
            .collect()
    }

    /// Whether these roles may ask for a grant of `category`.
    pub fn may_request(&self, roles: &[String], category: Category) -> bool {
        !self.is_operator(roles) && self.access(roles, category) >= Access::Request
    }

    /// The part of the decision the roles settle alone: a denial, or what to look up.
    pub fn plan(&self, roles: &[String], category: Category) -> Result<Plan, Denial> {
        // One pass over the roles: this runs on every patient request.
        let mut access = Access::None;
        for rule in self.rules(roles) {
            if rule.operator {
                return Err(Denial::Operator);
            }
            access = access.max(rule.access[category.0]);
        }
        match access {
            Access::None => Err(Denial::NeverAllowed),
            access => Ok(Plan {
                care_team_suffices: access == Access::CareTeam
                    && !self.categories[category.0].sensitive,
            }),
        }
    }
}

/// The decision, once the store has said whether the person is on the care team (asked only
/// when it suffices) and which active grant covers the request, if any.
pub fn decide(plan: Plan, on_care_team: bool, grant: Option<GrantUse>) -> Result<Basis, Denial> {
    if plan.care_team_suffices && on_care_team {
        return Ok(Basis::CareTeam);
    }
    match grant {
        Some(GrantUse {
            id,
            emergency: true,
            ..
        }) => Ok(Basis::BreakGlass(id)),
        Some(GrantUse { id, .. }) => Ok(Basis::Grant(id)),
        None => Err(Denial::NeedsGrant),
    }
}

/// What a patient route carries, and where its patient id is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataRule {
    /// A REST route: one category, the patient id where the route says.
    Rest {
        category: Category,
        patient: PatientAt,
    },
    /// A FHIR route (`fhir: true`): the FHIR request after the path's first `base` segments
    /// says both ([`fhir`]).
    Fhir { base: usize },
}

/// Where a route finds the patient id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatientAt {
    /// The path segment at this position (0 is the first after the leading `/`).
    Segment(usize),
    /// The query parameter of this name.
    Query(String),
}

impl PatientAt {
    /// The patient a request names: `None` when it names none, names one twice, or names
    /// something that is not a patient id ([`valid_patient`]).
    pub fn find(&self, path: &str, query: Option<&str>) -> Option<String> {
        let found = match self {
            PatientAt::Segment(index) => {
                // Bytes, not `str::split`: this runs on every patient request.
                let segment = path
                    .as_bytes()
                    .get(1..)?
                    .split(|b| *b == b'/')
                    .nth(*index)?;
                std::str::from_utf8(segment).ok()?.to_owned()
            }
            PatientAt::Query(name) => {
                let mut values = query_pairs(query?).filter(|(key, _)| key == name);
                let value = values.next()?.1;
                if values.next().is_some() {
                    return None;
                }
                value
            }
        };
        valid_patient(&found).then_some(found)
    }
}

/// A patient id as routes carry it: 1 to 64 letters, digits, `-`, `.` or `_` (FHIR's id
/// alphabet, and `_`). Anything else names no patient.
pub fn valid_patient(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARTICLE: &str = "
categories: { demographics: {}, labs: {}, notes: {}, imaging: {}, mental-health: { sensitive: true } }
roles:
  physician: { care_team: [demographics, labs, notes, imaging], request: [mental-health] }
  dermatologist: { care_team: [demographics, notes, imaging], request: [labs] }
  chief-physician: { care_team: [demographics, labs, notes, imaging], approve: true }
  receptionist: { care_team: [demographics] }
  operator: { operator: true }
";

    fn policy() -> AccessPolicy {
        serde_saphyr::from_str::<PolicyConfig>(ARTICLE)
            .unwrap()
            .compile()
            .unwrap()
    }

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn outcome(
        policy: &AccessPolicy,
        who: &[&str],
        category: &str,
        on_team: bool,
        grant: Option<GrantId>,
    ) -> Result<Basis, Denial> {
        let category = policy.category(category).unwrap();
        let plan = policy.plan(&roles(who), category)?;
        let grant = grant.map(|id| GrantUse {
            id,
            emergency: false,
            until: u64::MAX,
        });
        decide(plan, on_team, grant)
    }

    #[test]
    fn the_articles_dermatologist_sees_notes_but_needs_a_grant_for_labs() {
        let p = policy();
        let grant = Some(GrantId::from_bytes([7; 16]));
        assert_eq!(
            outcome(&p, &["dermatologist"], "notes", true, None),
            Ok(Basis::CareTeam)
        );
        assert_eq!(
            outcome(&p, &["dermatologist"], "labs", true, None),
            Err(Denial::NeedsGrant),
            "on the care team, but labs are for dermatologists on request only"
        );
        assert_eq!(
            outcome(&p, &["dermatologist"], "labs", true, grant),
            Ok(Basis::Grant(GrantId::from_bytes([7; 16])))
        );
        assert_eq!(
            outcome(&p, &["physician"], "labs", false, None),
            Err(Denial::NeedsGrant),
            "not on the care team"
        );
        assert_eq!(
            outcome(&p, &["physician"], "labs", true, None),
            Ok(Basis::CareTeam)
        );
    }

    #[test]
    fn sensitive_data_needs_a_grant_even_for_the_care_team() {
        let p = policy();
        assert_eq!(
            outcome(&p, &["physician"], "mental-health", true, None),
            Err(Denial::NeedsGrant)
        );
        let grant = GrantId::from_bytes([1; 16]);
        assert_eq!(
            outcome(&p, &["physician"], "mental-health", true, Some(grant)),
            Ok(Basis::Grant(grant))
        );
    }

    #[test]
    fn a_category_no_role_gives_is_denied_without_a_request_and_unknown_roles_give_nothing() {
        let p = policy();
        let grant = Some(GrantId::from_bytes([1; 16]));
        assert_eq!(
            outcome(&p, &["receptionist"], "labs", true, grant),
            Err(Denial::NeverAllowed),
            "a grant cannot give what no role may ask for"
        );
        assert_eq!(
            outcome(&p, &["janitor"], "demographics", true, None),
            Err(Denial::NeverAllowed)
        );
        assert_eq!(
            outcome(&p, &[], "demographics", true, None),
            Err(Denial::NeverAllowed)
        );
        let labs = p.category("labs").unwrap();
        assert!(!p.may_request(&roles(&["receptionist"]), labs));
        assert!(p.may_request(&roles(&["dermatologist"]), labs));
        assert!(
            p.may_request(&roles(&["physician"]), labs),
            "care team implies request"
        );
    }

    #[test]
    fn the_best_role_wins_but_an_operator_role_denies_everything() {
        let p = policy();
        assert_eq!(
            outcome(&p, &["receptionist", "physician"], "labs", true, None),
            Ok(Basis::CareTeam)
        );
        for category in ["demographics", "labs", "mental-health"] {
            assert_eq!(
                outcome(
                    &p,
                    &["operator", "chief-physician"],
                    category,
                    true,
                    Some(GrantId::from_bytes([1; 16]))
                ),
                Err(Denial::Operator),
                "{category}"
            );
        }
        assert!(p.may_approve(&roles(&["chief-physician"])));
        assert!(!p.may_approve(&roles(&["operator", "chief-physician"])));
        assert!(!p.may_approve(&roles(&["physician"])));
        let labs = p.category("labs").unwrap();
        assert!(!p.may_request(&roles(&["operator", "physician"]), labs));
    }

    fn refused(yaml: &str) -> PolicyError {
        match serde_saphyr::from_str::<PolicyConfig>(yaml)
            .unwrap()
            .compile()
        {
            Ok(_) => panic!("compiled: {yaml}"),
            Err(error) => error,
        }
    }

    #[test]
    fn the_config_is_checked() {
        let error = refused(
            "categories: { labs: {} }\nroles: { ops: { operator: true, care_team: [labs] } }\n",
        );
        assert_eq!(error.key, "roles.ops");
        assert!(error.message.contains("no data category"), "{error}");
        let error = refused(
            "categories: { labs: {} }\nroles: { ops: { operator: true, request: [labs] } }\n",
        );
        assert_eq!(error.key, "roles.ops");
        let error = refused(
            "categories: { labs: {} }\nroles: { ops: { operator: true, approve: true } }\n",
        );
        assert_eq!(error.key, "roles.ops.approve");
        let error = refused("categories: { labs: {} }\nroles: { nurse: { care_team: [lab] } }\n");
        assert_eq!(
            (error.key.as_str(), error.message.as_str()),
            (
                "roles.nurse.care_team",
                "`lab` is not one of policy.categories"
            )
        );
        let error = refused("categories: { labs: {} }\nroles: { nurse: { request: [x] } }\n");
        assert_eq!(error.key, "roles.nurse.request");
        assert_eq!(refused("categories: {}\nroles: {}\n").key, "categories");
        assert_eq!(
            refused("categories: { \"la bs\": {} }\nroles: {}\n").key,
            "categories.la bs"
        );
        let error = refused("categories: { labs: {} }\nroles: {}\ngrants: { approvals: 0 }\n");
        assert_eq!(error.key, "grants.approvals");
        let error = refused("categories: { labs: {} }\nroles: {}\ngrants: { max_duration: 0s }\n");
        assert_eq!(error.key, "grants.max_duration");
        let error = refused("categories: { labs: {} }\nroles: {}\ngrants: { pending_ttl: 0s }\n");
        assert_eq!(error.key, "grants.pending_ttl");
        assert!(
            serde_saphyr::from_str::<PolicyConfig>("categories: {}\nroles: {}\nextra: 1\n")
                .is_err()
        );
        assert!(
            serde_saphyr::from_str::<PolicyConfig>(
                "categories: {}\nroles: { a: { care_teams: [] } }\n"
            )
            .is_err()
        );
        let grants = policy().grants;
        assert_eq!(
            grants,
            GrantRules {
                max_duration: 24 * 3600,
                pending_ttl: 3600,
                approvals: 1
            }
        );
    }

    #[test]
    fn the_patient_is_found_where_the_route_says_and_only_once() {
        let segment = PatientAt::Segment(2);
        assert_eq!(
            segment.find("/api/patients/p7/labs", None),
            Some("p7".into())
        );
        assert_eq!(segment.find("/api/patients", None), None);
        assert_eq!(segment.find("/api/patients/a%20b/labs", None), None);
        let query = PatientAt::Query("patient".into());
        assert_eq!(
            query.find("/labs", Some("patient=p7&x=1")),
            Some("p7".into())
        );
        assert_eq!(query.find("/labs", Some("patient=p%37")), Some("p7".into()));
        assert_eq!(
            query.find("/labs", Some("patient=p7&patient=p8")),
            None,
            "twice"
        );
        assert_eq!(query.find("/labs", Some("subject=p7")), None);
        assert_eq!(query.find("/labs", None), None);
        assert_eq!(query.find("/labs", Some("patient=")), None);
    }

    #[test]
    fn break_glass_is_for_its_roles_fresh_second_factors_and_never_operators() {
        let yaml = format!(
            "{ARTICLE}  privacy: {{ review: true }}\nbreak_glass: {{ roles: [physician], reasons: [unconscious] }}\n"
        );
        let p = serde_saphyr::from_str::<PolicyConfig>(&yaml)
            .unwrap()
            .compile()
            .unwrap();
        assert!(p.may_break_glass(&roles(&["physician"])));
        assert!(!p.may_break_glass(&roles(&["dermatologist"])));
        assert!(!p.may_break_glass(&roles(&["physician", "operator"])));
        assert!(p.may_review(&roles(&["privacy"])));
        assert!(!p.may_review(&roles(&["physician"])));
        let rules = p.break_glass.clone().unwrap();
        assert_eq!((rules.duration, rules.reauth_within), (3600, 300));
        assert!(rules.fresh(1000, 1300));
        assert!(!rules.fresh(1000, 1301));
        assert_eq!(
            p.requestable(&roles(&["physician"])),
            ["demographics", "imaging", "labs", "mental-health", "notes"]
        );
        let id = GrantId::from_bytes([5; 16]);
        let plan = p
            .plan(&roles(&["physician"]), p.category("labs").unwrap())
            .unwrap();
        let emergency = Some(GrantUse {
            id,
            emergency: true,
            until: u64::MAX,
        });
        assert_eq!(decide(plan, false, emergency), Ok(Basis::BreakGlass(id)));
        assert_eq!(Basis::BreakGlass(id).purpose_of_use(), "ETREAT");
        assert_eq!(Basis::Grant(id).purpose_of_use(), "TREAT");
        assert_eq!(Basis::CareTeam.purpose_of_use(), "TREAT");
        assert_eq!(Basis::BreakGlass(id).grant(), Some(id));
        assert_eq!(Basis::Grant(id).grant(), Some(id));
        assert_eq!(Basis::CareTeam.grant(), None);
        for (config, key) in [
            (
                "break_glass: { roles: [operator], reasons: [x] }\n",
                "break_glass.roles",
            ),
            (
                "break_glass: { roles: [nobody], reasons: [x] }\n",
                "break_glass.roles",
            ),
            (
                "break_glass: { roles: [], reasons: [x] }\n",
                "break_glass.roles",
            ),
            (
                "break_glass: { roles: [physician], reasons: [] }\n",
                "break_glass.reasons",
            ),
            (
                "break_glass: { roles: [physician], reasons: [x], duration: 0s }\n",
                "break_glass.duration",
            ),
        ] {
            assert_eq!(refused(&format!("{ARTICLE}{config}")).key, key, "{config}");
        }
    }

    #[test]
    fn patient_ids_use_the_fhir_alphabet() {
        for good in ["7", "pat-1", "A.b_C", &"x".repeat(64)] {
            assert!(valid_patient(good), "{good}");
        }
        for bad in ["", "a/b", "a b", "é", "1;2", &"x".repeat(65)] {
            assert!(!valid_patient(bad), "{bad}");
        }
    }
}
