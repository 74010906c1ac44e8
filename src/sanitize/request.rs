//! Rules on the parsed request: host, method, path, body size, content type and body shape.
//!
//! Threat: legacy back ends that trust their input, and path tricks that a back end decodes
//! differently from the gateway. Rules (OWASP ASVS 5 V1 and V4, RFC 3986, RFC 9110):
//!
//! ```text
//!  before routing   Host in sanitize.server_names            else 400 WG-HOST-001
//!                   path: valid %XX, no %2F/%5C/backslash,   else 400 WG-PATH-00x
//!                   no control chars, valid UTF-8, no dot-segments, no %25XX
//!                   (also with XX encoded: judged after decoding)
//!  after routing    method in the route's list               else 405 WG-METHOD-001 + Allow
//!                   Content-Type in the route's list          else 415 WG-BODY-002
//!                   Content-Length within max_body_size       else 413 WG-BODY-001 (and counted
//!                                                              while streaming, never buffered)
//!                   JSON / form bodies: read whole up to json.max_size, must parse, JSON nested
//!                   at most json.max_depth                    else 400 WG-BODY-003/4/5, 413
//!                   query, form and JSON values: no injection  else 400 WG-INJ-00x (mode block)
//! ```
//!
//! Other bodies (XML, binary, plain text) stream through unscanned: XML markup would look like
//! XSS to a value scanner, so content types are the control for them.
//!
//! A browser or API client never sends dot-segments, encoded separators or double encoding in
//! a path: they exist to make two parsers disagree, so they are refused rather than repaired.

use http::Method;
use http::header::{self, HeaderMap, HeaderValue};

use crate::config::{InjectionMode, JsonLimits, MethodName, RouteSanitize, Sanitize};
use crate::path::escape_at;
use crate::refusal::Refusal;
use crate::sanitize::injection::{self, FieldAllowList, Finding};

/// The host, lower-case and without port, must be one of `names` (any when `names` is empty).
pub fn check_host(host: &str, names: &[String]) -> Result<(), Refusal> {
    if names.is_empty() || names.iter().any(|n| n.eq_ignore_ascii_case(host)) {
        Ok(())
    } else {
        Err(Refusal::UnknownHost)
    }
}

/// Checks the raw request path (before normalization).
pub fn check_path(raw: &str, allow_encoded_slash: bool) -> Result<(), Refusal> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let value = if byte == b'%' {
            let value = escape_at(bytes, i).ok_or(Refusal::PathBadEncoding)?;
            if (value == b'/' || value == b'\\') && !allow_encoded_slash {
                return Err(Refusal::PathEncodedSeparator);
            }
            i += 3;
            value
        } else {
            if byte == b'\\' {
                return Err(Refusal::PathEncodedSeparator);
            }
            i += 1;
            byte
        };
        if value < 0x20 || value == 0x7f {
            return Err(Refusal::PathControlCharacter);
        }
        decoded.push(value);
    }
    // On the decoded bytes, where a `%` can only come from `%25`: so `%25%32%65`, the hex digits
    // encoded too, is double encoding as much as `%252e` (a back end decoding twice reads `.`).
    if (0..decoded.len()).any(|at| escape_at(&decoded, at).is_some()) {
        return Err(Refusal::PathDoubleEncoding);
    }
    let decoded = std::str::from_utf8(&decoded).map_err(|_| Refusal::PathInvalidUtf8)?;
    if decoded
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(Refusal::PathDotSegment);
    }
    Ok(())
}

/// What happens to a request body on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPlan {
    /// No body: nothing to read or count.
    Empty,
    /// Streamed through, cut at `limit` bytes.
    Stream { limit: u64 },
    /// Read whole (at most `limit` bytes), checked, then forwarded.
    Inspect { kind: BodyKind, limit: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
}

/// One route's rules, the global `sanitize` section with the route's overrides applied.
#[derive(Debug)]
pub struct RouteRules {
    methods: Vec<Method>,
    allow: HeaderValue,
    max_body: u64,
    content_types: Vec<String>,
    json: JsonLimits,
    injection: InjectionMode,
    allow_fields: FieldAllowList,
}

impl RouteRules {
    pub fn new(global: &Sanitize, route: &RouteSanitize) -> Self {
        let methods: Vec<Method> = route
            .methods
            .as_ref()
            .unwrap_or(&global.methods)
            .iter()
            .map(|MethodName(m)| m.clone())
            .collect();
        let allow = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            allow: HeaderValue::from_str(&allow).unwrap_or_else(|_| HeaderValue::from_static("")),
            methods,
            max_body: route.max_body_size.unwrap_or(global.max_body_size).0,
            content_types: route
                .content_types
                .as_ref()
                .unwrap_or(&global.content_types)
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            json: route.json.unwrap_or(global.json),
            injection: route.injection.as_ref().unwrap_or(&global.injection).mode,
            allow_fields: FieldAllowList::new(
                route
                    .injection
                    .as_ref()
                    .unwrap_or(&global.injection)
                    .allow_fields
                    .iter()
                    .cloned(),
            ),
        }
    }

    /// A finding refuses the request in `block` mode and is handed back to be logged in `log`.
    fn judge(&self, finding: Option<Finding>) -> Result<Option<Finding>, Refusal> {
        match (finding, self.injection) {
            (Some(finding), InjectionMode::Block) => Err(Refusal::Injection(finding.attack)),
            (finding, _) => Ok(finding),
        }
    }

    /// Scans the query string's names and values.
    pub fn check_query(&self, query: &str) -> Result<Option<Finding>, Refusal> {
        if self.injection == InjectionMode::Off {
            return Ok(None);
        }
        self.judge(injection::scan_query(query, &self.allow_fields))
    }

    /// The `Allow` header of a 405 on this route.
    pub fn allow_header(&self) -> &HeaderValue {
        &self.allow
    }

    /// Decides from the head alone; `has_body` is false when the request announces no body.
    pub fn check_head(
        &self,
        method: &Method,
        headers: &HeaderMap,
        has_body: bool,
    ) -> Result<BodyPlan, Refusal> {
        if !self.methods.contains(method) {
            return Err(Refusal::MethodNotAllowed);
        }
        if !has_body {
            return Ok(BodyPlan::Empty);
        }
        let announced = match headers.get(header::CONTENT_LENGTH) {
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or(Refusal::BodyTooLarge)?,
            ),
            None => None,
        };
        if announced.is_some_and(|length| length > self.max_body) {
            return Err(Refusal::BodyTooLarge);
        }
        let media_type = media_type(headers);
        if !self.content_types.is_empty()
            && !media_type
                .as_ref()
                .is_some_and(|t| self.content_types.contains(t))
        {
            return Err(Refusal::UnsupportedMediaType);
        }
        let kind = match media_type.as_deref() {
            Some(t) if t == "application/json" || t.ends_with("+json") => Some(BodyKind::Json),
            Some("application/x-www-form-urlencoded") => Some(BodyKind::Form),
            _ => None,
        };
        Ok(match kind {
            Some(BodyKind::Json) => {
                let limit = self.max_body.min(self.json.max_size.0);
                if announced.is_some_and(|length| length > limit) {
                    return Err(Refusal::BodyTooLarge);
                }
                BodyPlan::Inspect {
                    kind: BodyKind::Json,
                    limit,
                }
            }
            Some(kind) => BodyPlan::Inspect {
                kind,
                limit: self.max_body,
            },
            None => BodyPlan::Stream {
                limit: self.max_body,
            },
        })
    }

    /// Checks a body read whole under [`BodyPlan::Inspect`]: its shape, then its values.
    pub fn check_body(&self, kind: BodyKind, body: &[u8]) -> Result<Option<Finding>, Refusal> {
        let scan = self.injection != InjectionMode::Off;
        let finding = match kind {
            BodyKind::Json => {
                if json_depth(body) > self.json.max_depth {
                    return Err(Refusal::JsonTooDeep);
                }
                let value: serde_json::Value =
                    serde_json::from_slice(body).map_err(|_| Refusal::MalformedJson)?;
                scan.then(|| injection::scan_json(&value, &self.allow_fields))
                    .flatten()
            }
            BodyKind::Form => {
                let finding = injection::scan_form(body, &self.allow_fields)
                    .map_err(|_| Refusal::MalformedForm)?;
                finding.filter(|_| scan)
            }
        };
        self.judge(finding)
    }
}

/// The deepest nesting of arrays and objects, found without parsing (strings are skipped), so
/// that a hostile depth never reaches the recursive parser.
fn json_depth(body: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &byte in body {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The media type of the request body (`Content-Type` without parameters), lower case.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default();
    Some(essence.trim().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_rules() {
        assert_eq!(check_path("/api/patients/7", false), Ok(()));
        assert_eq!(check_path("/api/caf%C3%A9/%7Euser/a.b/..c", false), Ok(()));
        for (path, refusal) in [
            ("/a%2", Refusal::PathBadEncoding),
            ("/a%zz", Refusal::PathBadEncoding),
            ("/a%2fb", Refusal::PathEncodedSeparator),
            ("/a%5Cb", Refusal::PathEncodedSeparator),
            ("/a\\b", Refusal::PathEncodedSeparator),
            ("/a%00b", Refusal::PathControlCharacter),
            ("/a%0d%0aSet-Cookie:x", Refusal::PathControlCharacter),
            ("/a%7f", Refusal::PathControlCharacter),
            ("/a%C0%AE%C0%AE/etc", Refusal::PathInvalidUtf8),
            ("/a%ff", Refusal::PathInvalidUtf8),
            ("/public/../admin", Refusal::PathDotSegment),
            ("/public/%2e%2e/admin", Refusal::PathDotSegment),
            ("/public/./x", Refusal::PathDotSegment),
            ("/a/..", Refusal::PathDotSegment),
            ("/%252e%252e/admin", Refusal::PathDoubleEncoding),
            ("/a%252fb", Refusal::PathDoubleEncoding),
        ] {
            assert_eq!(check_path(path, false), Err(refusal), "{path}");
        }
        assert_eq!(check_path("/Patient/a%2Fb", true), Ok(()));
    }

    /// Found by the `path` fuzz target: `%25` followed by hex digits that are themselves
    /// encoded passed, and normalization then decoded them into a real `%252e`.
    #[test]
    fn double_encoding_with_encoded_hex_digits_is_refused() {
        for path in ["/%252%36", "/%25%32%65%25%32%65/admin", "/%25%34%31"] {
            assert_eq!(
                check_path(path, false),
                Err(Refusal::PathDoubleEncoding),
                "{path}"
            );
        }
        assert_eq!(check_path("/100%25", false), Ok(()));
        assert_eq!(check_path("/%25zz/%25%7E", false), Ok(()));
    }

    #[test]
    fn hosts() {
        let names = vec!["ehr.example.org".to_owned()];
        assert_eq!(check_host("ehr.example.org", &names), Ok(()));
        assert_eq!(check_host("EHR.example.org", &names), Ok(()));
        assert_eq!(
            check_host("evil.example", &names),
            Err(Refusal::UnknownHost)
        );
        assert_eq!(check_host("anything", &[]), Ok(()));
    }

    fn rules(route: RouteSanitize) -> RouteRules {
        RouteRules::new(&Sanitize::default(), &route)
    }

    fn head(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    header::HeaderName::try_from(*n).unwrap(),
                    HeaderValue::try_from(*v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn methods_sizes_and_types() {
        let default = rules(RouteSanitize::default());
        assert_eq!(
            default.check_head(&Method::TRACE, &HeaderMap::new(), false),
            Err(Refusal::MethodNotAllowed)
        );
        assert_eq!(
            default.check_head(&Method::CONNECT, &HeaderMap::new(), false),
            Err(Refusal::MethodNotAllowed)
        );
        assert_eq!(
            default.check_head(&Method::GET, &HeaderMap::new(), false),
            Ok(BodyPlan::Empty)
        );
        assert_eq!(
            default.allow_header(),
            "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
        );

        let strict = rules(RouteSanitize {
            methods: Some(vec![MethodName(Method::GET), MethodName(Method::POST)]),
            max_body_size: Some(crate::config::ByteSize(100)),
            content_types: Some(vec!["application/fhir+json".into()]),
            ..RouteSanitize::default()
        });
        assert_eq!(
            strict.check_head(&Method::DELETE, &HeaderMap::new(), false),
            Err(Refusal::MethodNotAllowed)
        );
        assert_eq!(strict.allow_header(), "GET, POST");
        let fhir = head(&[
            ("content-type", "application/fhir+json; charset=utf-8"),
            ("content-length", "50"),
        ]);
        assert_eq!(
            strict.check_head(&Method::POST, &fhir, true),
            Ok(BodyPlan::Inspect {
                kind: BodyKind::Json,
                limit: 100
            })
        );
        let big = head(&[
            ("content-type", "application/fhir+json"),
            ("content-length", "101"),
        ]);
        assert_eq!(
            strict.check_head(&Method::POST, &big, true),
            Err(Refusal::BodyTooLarge)
        );
        let xml = head(&[("content-type", "application/fhir+xml")]);
        assert_eq!(
            strict.check_head(&Method::POST, &xml, true),
            Err(Refusal::UnsupportedMediaType)
        );
        assert_eq!(
            strict.check_head(&Method::POST, &HeaderMap::new(), true),
            Err(Refusal::UnsupportedMediaType)
        );

        let octets = head(&[("content-type", "application/octet-stream")]);
        assert_eq!(
            default.check_head(&Method::PUT, &octets, true),
            Ok(BodyPlan::Stream { limit: 10 << 20 })
        );
        let form = head(&[("content-type", "application/x-www-form-urlencoded")]);
        assert_eq!(
            default.check_head(&Method::POST, &form, true),
            Ok(BodyPlan::Inspect {
                kind: BodyKind::Form,
                limit: 10 << 20
            })
        );
    }

    #[test]
    fn json_and_form_bodies() {
        let default = rules(RouteSanitize::default());
        let patient = br#"{"resourceType":"Patient","name":[{"family":"O'Brien"}],"text":{"div":"<div><b>x</b></div>"}}"#;
        assert_eq!(default.check_body(BodyKind::Json, patient), Ok(None));
        let malformed: [&[u8]; 2] = [br#"{"a": [1, 2,]}"#, br#"{"a": "unterminated}"#];
        for body in malformed {
            assert_eq!(
                default.check_body(BodyKind::Json, body),
                Err(Refusal::MalformedJson)
            );
        }
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        assert_eq!(
            default.check_body(BodyKind::Json, deep.as_bytes()),
            Err(Refusal::JsonTooDeep)
        );
        let hostile = "[".repeat(100_000);
        assert_eq!(
            default.check_body(BodyKind::Json, hostile.as_bytes()),
            Err(Refusal::JsonTooDeep)
        );
        let brackets_in_strings = format!(r#"{{"note":"{}"}}"#, "[".repeat(100));
        assert_eq!(
            default.check_body(BodyKind::Json, brackets_in_strings.as_bytes()),
            Ok(None)
        );

        assert_eq!(
            default.check_body(BodyKind::Form, b"name=O%27Brien&dose=5+mg"),
            Ok(None)
        );
        assert_eq!(
            default.check_body(BodyKind::Form, b"name=%zz"),
            Err(Refusal::MalformedForm)
        );
        assert_eq!(
            default.check_body(BodyKind::Form, b"name=%ff"),
            Err(Refusal::MalformedForm)
        );
    }

    #[test]
    fn injection_modes() {
        let attack = br#"{"note":"1' OR '1'='1"}"#;
        let block = rules(RouteSanitize::default());
        assert_eq!(
            block.check_body(BodyKind::Json, attack),
            Err(Refusal::Injection(injection::Attack::SqlInjection))
        );
        assert_eq!(
            block.check_query("q=%3Cscript%3Ealert(1)%3C/script%3E"),
            Err(Refusal::Injection(injection::Attack::CrossSiteScripting))
        );
        assert_eq!(block.check_query("family=O%27Brien&_count=10"), Ok(None));
        let mode = |mode| RouteSanitize {
            injection: Some(crate::config::Injection {
                mode,
                allow_fields: Vec::new(),
            }),
            ..RouteSanitize::default()
        };
        let logged = rules(mode(InjectionMode::Log))
            .check_body(BodyKind::Json, attack)
            .unwrap()
            .unwrap();
        assert_eq!(logged.field, "json:note");
        assert_eq!(
            rules(mode(InjectionMode::Off)).check_body(BodyKind::Json, attack),
            Ok(None)
        );
        assert_eq!(
            rules(mode(InjectionMode::Off)).check_query("q=<script>alert(1)</script>"),
            Ok(None)
        );
    }
}
