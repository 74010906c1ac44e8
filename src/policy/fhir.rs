//! FHIR routes: whose data, and which kind, a FHIR REST request reaches and its answer carries.
//!
//! **The threat.** A FHIR server answers whatever it is asked: `Observation?code=glucose` is
//! every patient's blood sugar, `Observation/123` is one patient's result whoever asks,
//! `_include`, `_revinclude` and chained parameters (`subject.name=…`) pull in resources of
//! other patients, and a server that does not support a parameter ignores it (FHIR's default
//! "lenient" handling), so `category=vital-signs` may still bring back the labs.
//!
//! **The rule.** On a route with `fhir: true` the gateway reads the request itself (sans I/O,
//! here) and only lets through reads it can check, with `GET`:
//!
//! ```text
//!  after the route's base      what it is                  patient         categories
//!  metadata                    capability statement        none            none (open)
//!  T/{id}[/_history[/{vid}]]   read, vread, history        T = Patient: id from the answer
//!  Patient/{id}/T              compartment search          id              T's, or `category=`
//!  T?patient=id | subject=Patient/id | (T = Patient) _id=id   id          T's, or `category=`
//!  T (a `shared` type)         read or search              none            none (open)
//!  anything else               ─────────────────────────────────────────▶ WG-FHIR-001
//! ```
//!
//! A search must name exactly one patient (WG-FHIR-002); `_include`, `_revinclude`, `_has`,
//! chained parameters and the parameters that reach other resources (`_contained`, `_filter`,
//! `_query`, `_list`, `_type`) are refused (WG-FHIR-004), as is a `_format` other than JSON
//! (WG-FHIR-006) and a resource type or category code `policy.fhir` does not name (WG-FHIR-005:
//! default deny). A search without `category=` may return every category its type carries: the
//! person must be allowed all of them, or add `category=` (WG-FHIR-003).
//!
//! Whatever the request said, the **answer is checked** before it leaves ([`FhirMap::classify`]):
//! every resource is this patient's data of these categories (its `id` for a `Patient`, else the
//! `patient`, `subject` or `beneficiary` reference, which must all name one `Patient/{id}`; its
//! `category` codes through the type's map, else the type's `data`), open (a `shared` type,
//! `OperationOutcome`, `CapabilityStatement`), or unknown, and an unknown resource is never shown.
//! A read whose resource the person may not see is refused whole (403 WG-FHIR-007, which does not
//! say whose it is). A search answer (a `searchset` or `history` Bundle) loses the entries the
//! person may not see, loses its `total` (it would count them), and gains an `OperationOutcome`
//! entry with the issue code `suppressed`, as FHIR's security-labels guidance does.
//!
//! **The standard.** HL7 FHIR R4 RESTful API (read, vread, history, search, compartments,
//! `_include`/`_revinclude`, chaining, `handling=lenient`), the Patient compartment, FHIR security
//! labels (`suppressed`), SMART App Launch v2 scopes (`patient/Observation.rs?category=…`, which
//! [`FhirMap::scopes`] derives from the same map for the identity assertion).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use serde_json::{Value, json};

use super::{AccessPolicy, Category, PolicyError, valid_patient};
use crate::sanitize::injection::query_pairs;
use crate::units::ByteSize;

/// `policy.fhir`: the data category of each FHIR resource type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirConfig {
    /// Resource types that carry patient data, and their categories.
    pub resources: BTreeMap<String, ResourceConfig>,
    /// Resource types that carry no patient's data (`Practitioner`, `Organization`,
    /// `Medication`…): any person with a session may read and search them.
    #[serde(default)]
    pub shared: Vec<String>,
    /// The largest answer the gateway reads to check it; a larger one is refused (502).
    #[serde(default = "default_max_answer")]
    pub max_answer: ByteSize,
}

fn default_max_answer() -> ByteSize {
    ByteSize(8 * 1024 * 1024)
}

/// `policy.fhir.resources.<Type>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// The category of the type's resources that `category` does not place.
    #[serde(default)]
    pub data: Option<String>,
    /// The type's `category` codes (`code`, or `system|code`) and the data category each is.
    #[serde(default)]
    pub category: BTreeMap<String, String>,
}

/// `policy.fhir`, checked.
pub struct FhirMap {
    types: HashMap<String, TypeRule>,
    shared: HashSet<String>,
    pub max_answer: u64,
    /// Per category (in the policy's order), its SMART v2 scopes.
    scopes: Vec<Vec<String>>,
}

struct TypeRule {
    codes: Vec<CodeRule>,
    data: Option<Category>,
}

struct CodeRule {
    system: Option<String>,
    code: String,
    category: Category,
}

impl TypeRule {
    /// The category of one coding: its code (and system, when the rule names one).
    fn lookup(&self, system: Option<&str>, code: &str) -> Option<Category> {
        self.codes
            .iter()
            .find(|rule| {
                rule.code == code
                    && match (&rule.system, system) {
                        (Some(wanted), Some(system)) => wanted == system,
                        _ => true,
                    }
            })
            .map(|rule| rule.category)
            .or(self.data)
    }

    /// Every category the type's resources may carry.
    fn all(&self) -> Vec<Category> {
        let mut all: Vec<Category> = self.codes.iter().map(|rule| rule.category).collect();
        all.extend(self.data);
        all.sort_by_key(|c| c.0);
        all.dedup();
        all
    }
}

/// A FHIR resource type name: `Observation`, `Patient`.
fn valid_type(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Types whose resources never carry a patient's data and are always open.
const ALWAYS_OPEN: [&str; 2] = ["OperationOutcome", "CapabilityStatement"];

impl FhirConfig {
    /// The checked map; errors name keys under `policy`.
    pub fn compile(&self, policy: &AccessPolicy) -> Result<FhirMap, PolicyError> {
        let refuse = |key: String, message: String| {
            Err(PolicyError {
                key: format!("fhir.{key}"),
                message,
            })
        };
        let category = |key: String, name: &str| {
            policy.category(name).ok_or_else(|| PolicyError {
                key: format!("fhir.{key}"),
                message: format!("`{name}` is not one of policy.categories"),
            })
        };
        if self.resources.is_empty() {
            return refuse(
                "resources".into(),
                "name the resource types that carry patient data".into(),
            );
        }
        let mut types = HashMap::new();
        for (name, config) in &self.resources {
            let key = format!("resources.{name}");
            if !valid_type(name) || ALWAYS_OPEN.contains(&name.as_str()) || name == "Bundle" {
                return refuse(
                    key,
                    "not a FHIR resource type that carries patient data".into(),
                );
            }
            if config.data.is_none() && config.category.is_empty() {
                return refuse(
                    key,
                    "name its `data` category, its `category` codes, or both".into(),
                );
            }
            if name == "Patient" && !config.category.is_empty() {
                return refuse(key, "a Patient is one category: give `data` only".into());
            }
            let data = match &config.data {
                Some(data) => Some(category(format!("{key}.data"), data)?),
                None => None,
            };
            let mut codes: Vec<CodeRule> = Vec::new();
            for (written, data) in &config.category {
                let (system, code) = match written.rsplit_once('|') {
                    Some((system, code)) => (Some(system.to_owned()), code.to_owned()),
                    None => (None, written.clone()),
                };
                let category = category(format!("{key}.category.{written}"), data)?;
                if code.is_empty() || code.contains([',', '$', ' ']) {
                    return refuse(
                        format!("{key}.category.{written}"),
                        "a code (or `system|code`) without `,`, `$` or spaces".into(),
                    );
                }
                // A search's `category=code` names no system: one code is one category.
                if codes
                    .iter()
                    .any(|other| other.code == code && other.category != category)
                {
                    return refuse(
                        format!("{key}.category.{written}"),
                        format!("the code `{code}` is already another category"),
                    );
                }
                codes.push(CodeRule {
                    system,
                    code,
                    category,
                });
            }
            types.insert(name.clone(), TypeRule { codes, data });
        }
        let mut shared = HashSet::new();
        for name in &self.shared {
            if !valid_type(name) || types.contains_key(name) || name == "Bundle" {
                return refuse(
                    "shared".into(),
                    format!("`{name}` is not a resource type without patient data"),
                );
            }
            shared.insert(name.clone());
        }
        if self.max_answer.0 == 0 {
            return refuse("max_answer".into(), "must be at least 1B".into());
        }
        let mut map = FhirMap {
            types,
            shared,
            max_answer: self.max_answer.0,
            scopes: Vec::new(),
        };
        map.scopes = (0..policy.categories.len())
            .map(|index| map.smart_scopes(Category(index)))
            .collect();
        Ok(map)
    }
}

/// What a FHIR request is, as far as the policy is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FhirRead {
    pub kind: ReadKind,
    /// The answer is a Bundle whose entries are checked one by one (search, history).
    pub lists: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadKind {
    /// No patient data is asked for (the capability statement, a `shared` type).
    Open,
    /// One patient's data, of these categories: decided before the request leaves.
    Patient {
        patient: String,
        categories: Vec<Category>,
        /// The request said which categories (`category=`); else they are all the type's.
        narrowed: bool,
    },
    /// A read by id: whose it is, only the answer says.
    ByAnswer,
}

/// Why a FHIR request is refused before it leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FhirRefusal {
    /// Not a read, search or history the gateway can check.
    Unsupported,
    /// A search that names no patient, or more than one.
    NoPatient,
    /// A parameter that reaches other resources or patients.
    Reaches,
    /// A resource type or category code the policy does not name.
    Unmapped,
    /// A `_format` other than JSON.
    Format,
}

/// A resource id (FHIR's `id` type).
fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
}

/// Search parameters that pull in or select other resources than the type's own.
const REACHING: [&str; 8] = [
    "_include",
    "_revinclude",
    "_contained",
    "_containedType",
    "_filter",
    "_query",
    "_list",
    "_type",
];

/// `Patient/{id}` (optionally with `/_history/{vid}`): the patient's id.
fn patient_reference(reference: &str) -> Option<&str> {
    let rest = reference.strip_prefix("Patient/")?;
    let id = match rest.split_once('/') {
        Some((id, history)) => {
            let version = history.strip_prefix("_history/")?;
            if !valid_id(version) {
                return None;
            }
            id
        }
        None => rest,
    };
    valid_patient(id).then_some(id)
}

impl FhirMap {
    /// Reads a request: `segments` are the path's segments after the route's base, `query` the
    /// raw query.
    pub fn read(&self, segments: &[&str], query: Option<&str>) -> Result<FhirRead, FhirRefusal> {
        let pairs: Vec<(String, String)> = query
            .map(|q| {
                query_pairs(q)
                    .filter(|(name, _)| !name.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        for (name, value) in &pairs {
            let bare = name.split(':').next().unwrap_or(name);
            if REACHING.contains(&bare) || bare.starts_with("_has") || bare.contains('.') {
                return Err(FhirRefusal::Reaches);
            }
            if bare == "_format"
                && !matches!(
                    value.as_str(),
                    "json" | "application/json" | "application/fhir+json"
                )
            {
                return Err(FhirRefusal::Format);
            }
        }
        let listed = |kind| FhirRead { kind, lists: true };
        let single = |kind| FhirRead { kind, lists: false };
        match segments {
            ["metadata"] => Ok(single(ReadKind::Open)),
            [kind, rest @ ..] if self.shared.contains(*kind) => match rest {
                [] => Ok(listed(ReadKind::Open)),
                [id] if valid_id(id) => Ok(single(ReadKind::Open)),
                _ => Err(FhirRefusal::Unsupported),
            },
            [kind, id, history @ ..] if valid_type(kind) && valid_id(id) => {
                let lists = match history {
                    [] => false,
                    ["_history"] => true,
                    ["_history", version] if valid_id(version) => false,
                    [compartment] if *kind == "Patient" && valid_type(compartment) => {
                        let patient = valid_patient(id).then_some(*id);
                        return self.search(compartment, patient, &pairs).map(listed);
                    }
                    _ => return Err(FhirRefusal::Unsupported),
                };
                let rule = self.types.get(*kind).ok_or(FhirRefusal::Unmapped)?;
                let kind = if *kind == "Patient" {
                    ReadKind::Patient {
                        patient: (*id).to_owned(),
                        categories: rule.all(),
                        narrowed: true,
                    }
                } else {
                    ReadKind::ByAnswer
                };
                Ok(FhirRead { kind, lists })
            }
            [kind] if valid_type(kind) => self.search(kind, None, &pairs).map(listed),
            _ => Err(FhirRefusal::Unsupported),
        }
    }

    /// A search of `kind` resources, in the compartment of `compartment` when given.
    fn search(
        &self,
        kind: &str,
        compartment: Option<&str>,
        pairs: &[(String, String)],
    ) -> Result<ReadKind, FhirRefusal> {
        if kind == "Patient" && compartment.is_some() {
            return Err(FhirRefusal::Unsupported);
        }
        let rule = self.types.get(kind).ok_or(FhirRefusal::Unmapped)?;
        let is_patient = kind == "Patient";
        let mut patients: Vec<&str> = compartment.into_iter().collect();
        let mut named = Vec::new();
        let mut narrowed = true;
        let mut saw_category = false;
        for (name, value) in pairs {
            let (bare, modifier) = match name.split_once(':') {
                Some((bare, modifier)) => (bare, Some(modifier)),
                None => (name.as_str(), None),
            };
            // A patient-naming parameter with another modifier (`:missing`, `:Group`) or a
            // bare `subject` id (it may be a Group's) names none: "".
            let patient = match (bare, modifier) {
                ("_id", None) if is_patient => Some(value.as_str()),
                ("patient", None | Some("Patient")) if !is_patient => {
                    Some(value.strip_prefix("Patient/").unwrap_or(value))
                }
                ("subject", Some("Patient")) if !is_patient => Some(value.as_str()),
                ("subject", None) if !is_patient => {
                    Some(value.strip_prefix("Patient/").unwrap_or(""))
                }
                ("_id", _) if is_patient => Some(""),
                ("patient" | "subject", _) if !is_patient => Some(""),
                _ => None,
            };
            if let Some(patient) = patient {
                patients.push(patient);
                continue;
            }
            if bare == "category" && !rule.codes.is_empty() {
                saw_category = true;
                if modifier.is_some() {
                    // `:not`, `:text`, `:in`…: any category may come back.
                    narrowed = false;
                    continue;
                }
                for token in value.split(',') {
                    let (system, code) = match token.rsplit_once('|') {
                        Some((system, code)) => (Some(system).filter(|s| !s.is_empty()), code),
                        None => (None, token),
                    };
                    named.push(rule.lookup(system, code).ok_or(FhirRefusal::Unmapped)?);
                }
            }
        }
        patients.dedup();
        let [patient] = patients.as_slice() else {
            return Err(FhirRefusal::NoPatient);
        };
        if !valid_patient(patient) {
            return Err(FhirRefusal::NoPatient);
        }
        let categories = if rule.codes.is_empty() {
            rule.all()
        } else if saw_category && narrowed {
            named.sort_by_key(|c| c.0);
            named.dedup();
            named
        } else {
            narrowed = false;
            rule.all()
        };
        Ok(ReadKind::Patient {
            patient: (*patient).to_owned(),
            categories,
            narrowed: narrowed || rule.codes.is_empty(),
        })
    }

    /// Whose data, of which kind, one resource of an answer is.
    pub fn classify(&self, resource: &Value) -> Carries {
        let Some(kind) = resource.get("resourceType").and_then(Value::as_str) else {
            return Carries::Unknown;
        };
        if ALWAYS_OPEN.contains(&kind) || self.shared.contains(kind) {
            return Carries::Open;
        }
        let Some(rule) = self.types.get(kind) else {
            return Carries::Unknown;
        };
        let patient = if kind == "Patient" {
            resource.get("id").and_then(Value::as_str)
        } else {
            referenced_patient(resource)
        };
        let Some(patient) = patient.filter(|p| valid_patient(p)) else {
            return Carries::Unknown;
        };
        let mut categories = Vec::new();
        let mut coded = false;
        if !rule.codes.is_empty() {
            for (system, code) in category_codes(resource.get("category")) {
                coded = true;
                match rule.lookup(system, code) {
                    Some(category) => categories.push(category),
                    None => return Carries::Unknown,
                }
            }
        }
        if !coded {
            match rule.data {
                Some(data) => categories.push(data),
                None => return Carries::Unknown,
            }
        }
        categories.sort_by_key(|c| c.0);
        categories.dedup();
        Carries::Patient {
            patient: patient.to_owned(),
            categories,
        }
    }

    /// The SMART App Launch v2 scopes that say "this category, read and search" for the
    /// upstream: one per resource type and code the category is, and `patient/T.rs` for a type
    /// that is wholly the category. A type's `data` for codes the map does not place has no
    /// scope (SMART cannot say "all but these").
    pub fn scopes(&self, category: Category) -> &[String] {
        self.scopes.get(category.0).map_or(&[], Vec::as_slice)
    }

    fn smart_scopes(&self, category: Category) -> Vec<String> {
        let mut scopes = Vec::new();
        for (kind, rule) in &self.types {
            if rule.codes.is_empty() && rule.data == Some(category) {
                scopes.push(format!("patient/{kind}.rs"));
            }
            for code in rule.codes.iter().filter(|c| c.category == category) {
                let token = match &code.system {
                    Some(system) => format!("{system}|{}", code.code),
                    None => code.code.clone(),
                };
                scopes.push(format!("patient/{kind}.rs?category={token}"));
            }
        }
        scopes.sort();
        scopes
    }
}

/// What one resource carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Carries {
    Open,
    Patient {
        patient: String,
        categories: Vec<Category>,
    },
    /// Whose or which kind cannot be told: never shown.
    Unknown,
}

/// The one patient the resource's `patient`, `subject` and `beneficiary` references name, or
/// `None` when they name none, another kind of subject, or several.
fn referenced_patient(resource: &Value) -> Option<&str> {
    let mut found: Option<&str> = None;
    for element in ["patient", "subject", "beneficiary"] {
        let references: Vec<&Value> = match resource.get(element) {
            None => continue,
            Some(Value::Array(items)) => items.iter().collect(),
            Some(one) => vec![one],
        };
        for reference in references {
            let id = reference
                .get("reference")
                .and_then(Value::as_str)
                .and_then(patient_reference)?;
            match found {
                Some(other) if other != id => return None,
                _ => found = Some(id),
            }
        }
    }
    found
}

/// The `(system, code)` pairs of a `category` element: CodeableConcepts (one or a list) or
/// plain codes (AllergyIntolerance's).
fn category_codes(element: Option<&Value>) -> Vec<(Option<&str>, &str)> {
    let items: Vec<&Value> = match element {
        None => return Vec::new(),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(one) => vec![one],
    };
    let mut codes = Vec::new();
    for item in items {
        match item {
            Value::String(code) => codes.push((None, code.as_str())),
            concept => {
                let codings = concept.get("coding").and_then(Value::as_array);
                for coding in codings.into_iter().flatten() {
                    if let Some(code) = coding.get("code").and_then(Value::as_str) {
                        codes.push((coding.get("system").and_then(Value::as_str), code));
                    }
                }
            }
        }
    }
    codes
}

/// Takes the entries `shown` refuses out of a search or history answer, says so in an
/// `OperationOutcome` entry and drops `total`; false when nothing was taken (the answer may
/// then leave as it came).
pub fn filter_bundle(bundle: &mut Value, shown: &[bool]) -> bool {
    let Some(entries) = bundle.get_mut("entry").and_then(Value::as_array_mut) else {
        return false;
    };
    let before = entries.len();
    let mut shown = shown.iter();
    entries.retain(|_| shown.next().copied().unwrap_or(false));
    if entries.len() == before {
        return false;
    }
    entries.push(json!({
        "resource": {
            "resourceType": "OperationOutcome",
            "issue": [{
                "severity": "information",
                "code": "suppressed",
                "diagnostics": "Some entries were removed: the access policy does not allow them to this person."
            }]
        },
        "search": { "mode": "outcome" }
    }));
    if let Some(object) = bundle.as_object_mut() {
        object.remove("total");
    }
    true
}

/// Whether an answer is a Bundle whose entries are checked one by one.
pub fn is_list(answer: &Value) -> bool {
    answer.get("resourceType").and_then(Value::as_str) == Some("Bundle")
        && matches!(
            answer.get("type").and_then(Value::as_str),
            Some("searchset" | "history")
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyConfig;

    const POLICY: &str = r#"
categories: { demographics: {}, labs: {}, vitals: {}, notes: {} }
roles: { physician: { care_team: [demographics, labs, vitals, notes] } }
fhir:
  resources:
    Patient: { data: demographics }
    Observation:
      category:
        laboratory: labs
        "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs": vitals
      data: labs
    DiagnosticReport: { category: { LAB: labs, RAD: notes } }
    Condition: { data: notes }
  shared: [Practitioner]
"#;

    fn policy() -> AccessPolicy {
        serde_saphyr::from_str::<PolicyConfig>(POLICY)
            .unwrap()
            .compile()
            .unwrap()
    }

    fn read(path: &str) -> Result<FhirRead, FhirRefusal> {
        let policy = policy();
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let segments: Vec<&str> = path.split('/').collect();
        policy.fhir.as_ref().unwrap().read(&segments, query)
    }

    fn names(categories: &[Category]) -> Vec<&'static str> {
        let policy = policy();
        categories
            .iter()
            .map(|c| match policy.category_name(*c) {
                "demographics" => "demographics",
                "labs" => "labs",
                "vitals" => "vitals",
                _ => "notes",
            })
            .collect()
    }

    /// The patient, categories and narrowing a request reads as, or its refusal.
    fn patient(path: &str) -> Result<(String, Vec<&'static str>, bool, bool), FhirRefusal> {
        let read = read(path)?;
        match read.kind {
            ReadKind::Patient {
                patient,
                categories,
                narrowed,
            } => Ok((patient, names(&categories), narrowed, read.lists)),
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn a_search_names_one_patient_and_its_categories() {
        assert_eq!(
            patient("Observation?patient=p1&category=laboratory"),
            Ok(("p1".into(), vec!["labs"], true, true))
        );
        assert_eq!(
            patient("Observation?subject=Patient/p1&category=vital-signs,laboratory"),
            Ok(("p1".into(), vec!["labs", "vitals"], true, true))
        );
        assert_eq!(
            patient(
                "Observation?subject:Patient=p1&category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"
            ),
            Ok(("p1".into(), vec!["vitals"], true, true))
        );
        assert_eq!(
            patient("Observation?patient=Patient/p1"),
            Ok(("p1".into(), vec!["labs", "vitals"], false, true)),
            "no category: all the type carries"
        );
        assert_eq!(
            patient("Observation?patient=p1&category:not=laboratory"),
            Ok(("p1".into(), vec!["labs", "vitals"], false, true))
        );
        assert_eq!(
            patient("Patient/p1/Observation?category=laboratory&date=ge2020"),
            Ok(("p1".into(), vec!["labs"], true, true)),
            "the compartment names the patient"
        );
        assert_eq!(
            patient("Condition?patient=p1"),
            Ok(("p1".into(), vec!["notes"], true, true)),
            "a type of one category needs none"
        );
        assert_eq!(
            patient("Patient?_id=p1"),
            Ok(("p1".into(), vec!["demographics"], true, true))
        );
        assert_eq!(
            patient("Observation?patient=p1&patient=p1&category=laboratory"),
            Ok(("p1".into(), vec!["labs"], true, true))
        );
        assert_eq!(
            patient("Observation?patient=p1&category=social-history"),
            Ok(("p1".into(), vec!["labs"], true, true)),
            "a code the map does not place is the type's data"
        );
        assert_eq!(
            patient("Observation?patient=p1&category=vital-signs&code=1234&_id=o1"),
            Ok(("p1".into(), vec!["vitals"], true, true)),
            "other parameters are neither patients nor categories"
        );
        assert_eq!(
            patient("Observation?patient=p1&category=|vital-signs"),
            Ok(("p1".into(), vec!["vitals"], true, true)),
            "an empty system names none"
        );
        assert_eq!(
            patient("Patient?_id=p1&subject:missing=true&patient=p2"),
            Ok(("p1".into(), vec!["demographics"], true, true)),
            "a Patient has no patient or subject to search by"
        );
    }

    #[test]
    fn a_search_without_exactly_one_patient_is_refused() {
        for path in [
            "Observation?code=glucose",
            "Observation",
            "Observation?patient=p1,p2",
            "Observation?patient=p1&subject=Patient/p2",
            "Observation?subject=p1",
            "Observation?subject=Group/g1",
            "Observation?subject:Group=g1",
            "Observation?patient:missing=true",
            "Observation?patient=",
            "Observation?patient=a%20b",
            "Patient?name=smith",
            "Patient?patient=p1",
            "Observation?_id=o1",
            "Patient/p1/Observation?patient=p2",
            "Patient?subject:Patient=p1",
            "Patient?subject=Patient/p1",
            "Patient?_id=p1&_id:not=p2",
            "Observation?patient=p1&subject:Group=g1",
        ] {
            assert_eq!(read(path), Err(FhirRefusal::NoPatient), "{path}");
        }
    }

    #[test]
    fn what_reaches_other_resources_is_refused() {
        for path in [
            "Observation?patient=p1&_include=Observation:subject",
            "Observation?patient=p1&_include:iterate=Observation:subject",
            "Observation?patient=p1&_revinclude=Provenance:target",
            "Patient?_id=p1&_has:Observation:patient:code=1234",
            "Observation?patient=p1&subject.name=smith",
            "Observation?patient.identifier=123",
            "Observation?patient=p1&_filter=code eq 1",
            "Observation?patient=p1&_contained=true",
            "Observation?patient=p1&_list=l1",
            "Observation?patient=p1&_query=current",
            "Observation?patient=p1&%5Finclude=Observation:subject",
            "metadata?_type=Observation",
        ] {
            assert_eq!(read(path), Err(FhirRefusal::Reaches), "{path}");
        }
    }

    #[test]
    fn reads_by_id_wait_for_the_answer_and_the_rest_is_refused() {
        let by_answer = |path| read(path).map(|r| (r.kind, r.lists));
        assert_eq!(by_answer("Observation/o1"), Ok((ReadKind::ByAnswer, false)));
        assert_eq!(
            by_answer("Observation/o1/_history/2"),
            Ok((ReadKind::ByAnswer, false))
        );
        assert_eq!(
            by_answer("Observation/o1/_history"),
            Ok((ReadKind::ByAnswer, true))
        );
        assert_eq!(
            patient("Patient/p1"),
            Ok(("p1".into(), vec!["demographics"], true, false))
        );
        assert_eq!(by_answer("metadata"), Ok((ReadKind::Open, false)));
        assert_eq!(by_answer("Practitioner"), Ok((ReadKind::Open, true)));
        assert_eq!(by_answer("Practitioner/d1"), Ok((ReadKind::Open, false)));
        for path in [
            "",
            "Patient/p1/$everything",
            "Observation/$lastn",
            "Observation/_search",
            "Observation/o1/_history/2/x",
            "Observation/o1/_history/$x",
            "Practitioner/$validate",
            "Observation/_history",
            "_history",
            "Patient/p1/Patient",
            "Patient/p1/observation",
            "Practitioner/d1/_history",
            "Observation/o 1",
        ] {
            assert_eq!(read(path), Err(FhirRefusal::Unsupported), "{path}");
        }
        for path in [
            "Encounter/e1",
            "Encounter?patient=p1",
            "Patient/p1/Encounter",
        ] {
            assert_eq!(read(path), Err(FhirRefusal::Unmapped), "{path}");
        }
        assert_eq!(
            read("DiagnosticReport?patient=p1&category=HM"),
            Err(FhirRefusal::Unmapped),
            "a code of a type without `data` that the map does not place"
        );
        assert_eq!(
            read("Observation?patient=p1&_format=xml"),
            Err(FhirRefusal::Format)
        );
        assert!(read("Observation?patient=p1&category=laboratory&_format=json").is_ok());
    }

    fn classify(resource: Value) -> Result<(String, Vec<&'static str>), Carries> {
        match policy().fhir.as_ref().unwrap().classify(&resource) {
            Carries::Patient {
                patient,
                categories,
            } => Ok((patient, names(&categories))),
            other => Err(other),
        }
    }

    #[test]
    fn a_resource_is_its_patients_data_of_its_categories() {
        let coded =
            |system: &str, code: &str| json!([{ "coding": [{ "system": system, "code": code }] }]);
        let system = "http://terminology.hl7.org/CodeSystem/observation-category";
        assert_eq!(
            classify(
                json!({ "resourceType": "Observation", "subject": { "reference": "Patient/p1" }, "category": coded(system, "vital-signs") })
            ),
            Ok(("p1".into(), vec!["vitals"]))
        );
        assert_eq!(
            classify(
                json!({ "resourceType": "Observation", "subject": { "reference": "Patient/p1" }, "category": coded("http://other.example", "vital-signs") })
            ),
            Ok(("p1".into(), vec!["labs"])),
            "another system's vital-signs is not the map's: the type's data"
        );
        assert_eq!(
            classify(
                json!({ "resourceType": "Observation", "subject": { "reference": "Patient/p1/_history/3" } })
            ),
            Ok(("p1".into(), vec!["labs"])),
            "no category: the type's data"
        );
        assert_eq!(
            classify(
                json!({ "resourceType": "Observation", "subject": { "reference": "Patient/p1" },
                "category": [coded(system, "vital-signs")[0].clone(), coded(system, "laboratory")[0].clone()] })
            ),
            Ok(("p1".into(), vec!["labs", "vitals"]))
        );
        assert_eq!(
            classify(json!({ "resourceType": "Patient", "id": "p1" })),
            Ok(("p1".into(), vec!["demographics"]))
        );
        assert_eq!(
            classify(
                json!({ "resourceType": "Condition", "patient": { "reference": "Patient/p1" }, "subject": { "reference": "Patient/p1" } })
            ),
            Ok(("p1".into(), vec!["notes"]))
        );
        for resource in [
            json!({ "resourceType": "Observation" }),
            json!({ "resourceType": "Observation", "subject": { "reference": "Group/g1" } }),
            json!({ "resourceType": "Observation", "subject": { "reference": "http://elsewhere.example/fhir/Patient/p1" } }),
            json!({ "resourceType": "Observation", "subject": { "reference": "Patient/p1" }, "patient": { "reference": "Patient/p2" } }),
            json!({ "resourceType": "Observation", "subject": { "display": "Peter" } }),
            json!({ "resourceType": "DiagnosticReport", "subject": { "reference": "Patient/p1" } }),
            json!({ "resourceType": "DiagnosticReport", "subject": { "reference": "Patient/p1" }, "category": coded("x", "HM") }),
            json!({ "resourceType": "Encounter", "subject": { "reference": "Patient/p1" } }),
            json!({ "resourceType": "Bundle", "type": "searchset" }),
            json!({ "resourceType": "Patient" }),
            json!({ "id": "p1" }),
        ] {
            assert_eq!(
                classify(resource.clone()),
                Err(Carries::Unknown),
                "{resource}"
            );
        }
        for open in ["OperationOutcome", "CapabilityStatement", "Practitioner"] {
            assert_eq!(
                classify(json!({ "resourceType": open })),
                Err(Carries::Open)
            );
        }
    }

    #[test]
    fn a_filtered_bundle_says_so_and_loses_its_total() {
        let mut bundle = json!({ "resourceType": "Bundle", "type": "searchset", "total": 3,
            "entry": [{ "resource": { "id": "a" } }, { "resource": { "id": "b" } }, { "resource": { "id": "c" } }] });
        assert!(is_list(&bundle));
        let untouched = bundle.clone();
        assert!(!filter_bundle(&mut bundle, &[true, true, true]));
        assert_eq!(bundle, untouched);
        assert!(filter_bundle(&mut bundle, &[true, false, true]));
        let entries = bundle["entry"].as_array().unwrap();
        let ids: Vec<&Value> = entries.iter().map(|e| &e["resource"]["id"]).collect();
        assert_eq!(ids[..2], [&json!("a"), &json!("c")]);
        assert_eq!(entries[2]["resource"]["issue"][0]["code"], "suppressed");
        assert_eq!(entries[2]["search"]["mode"], "outcome");
        assert!(bundle.get("total").is_none());
        assert!(!is_list(
            &json!({ "resourceType": "Bundle", "type": "collection" })
        ));
    }

    #[test]
    fn scopes_say_the_same_as_the_map() {
        let policy = policy();
        let map = policy.fhir.as_ref().unwrap();
        let labs = policy.category("labs").unwrap();
        assert_eq!(
            map.scopes(labs),
            [
                "patient/DiagnosticReport.rs?category=LAB",
                "patient/Observation.rs?category=laboratory"
            ]
        );
        assert_eq!(
            map.scopes(policy.category("vitals").unwrap()),
            [
                "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"
            ]
        );
        assert_eq!(
            map.scopes(policy.category("notes").unwrap()),
            [
                "patient/Condition.rs",
                "patient/DiagnosticReport.rs?category=RAD"
            ]
        );
    }

    #[test]
    fn the_map_is_checked() {
        let refused = |fhir: &str| {
            let yaml =
                format!("categories: {{ labs: {{}}, notes: {{}} }}\nroles: {{}}\nfhir:\n{fhir}");
            match serde_saphyr::from_str::<PolicyConfig>(&yaml)
                .unwrap()
                .compile()
            {
                Ok(_) => panic!("compiled: {fhir}"),
                Err(error) => error.key,
            }
        };
        for (fhir, key) in [
            ("  resources: {}\n", "fhir.resources"),
            (
                "  resources: { observation: { data: labs } }\n",
                "fhir.resources.observation",
            ),
            (
                "  resources: { Bundle: { data: labs } }\n",
                "fhir.resources.Bundle",
            ),
            (
                "  resources: { OperationOutcome: { data: labs } }\n",
                "fhir.resources.OperationOutcome",
            ),
            (
                "  resources: { Observation: {} }\n",
                "fhir.resources.Observation",
            ),
            (
                "  resources: { Observation: { data: lab } }\n",
                "fhir.resources.Observation.data",
            ),
            (
                "  resources: { Observation: { category: { x: lab } } }\n",
                "fhir.resources.Observation.category.x",
            ),
            (
                "  resources: { Observation: { category: { \"a|x\": labs, \"b|x\": notes } } }\n",
                "fhir.resources.Observation.category.b|x",
            ),
            (
                "  resources: { Observation: { category: { \"a,b\": labs } } }\n",
                "fhir.resources.Observation.category.a,b",
            ),
            (
                "  resources: { Patient: { category: { x: labs } } }\n",
                "fhir.resources.Patient",
            ),
            (
                "  resources: { Condition: { data: notes } }\n  shared: [Condition]\n",
                "fhir.shared",
            ),
            (
                "  resources: { Condition: { data: notes } }\n  max_answer: 0B\n",
                "fhir.max_answer",
            ),
        ] {
            assert_eq!(refused(fhir), key, "{fhir}");
        }
        assert_eq!(policy().fhir.as_ref().unwrap().max_answer, 8 * 1024 * 1024);
    }
}
