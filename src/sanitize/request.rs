//! Rules on the parsed request: host, method, path, body size, content type and body shape.
//!
//! Threat: legacy back ends that trust their input, and path tricks that a back end decodes
//! differently from the gateway. Rules (OWASP ASVS 5 V1 and V4, RFC 3986, RFC 9110):
//!
//! ```text
//!  before routing   Host in sanitize.server_names            else 400 WG-HOST-001
//!                   path: valid %XX, no %2F/%5C/backslash,   else 400 WG-PATH-00x
//!                   no control chars, valid UTF-8, no dot-segments (`..;x` is one), no %25XX
//!                   (also with XX encoded: judged after decoding)
//!                   header names without `_`                 else 400 WG-HDR-001
//!                   single-valued headers at most once       else 400 WG-HDR-002
//!  after routing    method in the route's list               else 405 WG-METHOD-001 + Allow
//!                   a method override (X-HTTP-Method-Override, X-Method-Override, X-HTTP-Method,
//!                   `_method` in the query or a form) names an allowed method: 405, or 400
//!                   WG-METHOD-002 when it names none; the override headers are not forwarded
//!                   Content-Type in the route's list          else 415 WG-BODY-002
//!                   Content-Length within max_body_size       else 413 WG-BODY-001 (and counted
//!                                                              while streaming, never buffered)
//!                   JSON / form / multipart bodies: read whole up to json.max_size (JSON) or
//!                   max_body_size, must parse, JSON nested at most json.max_depth and without
//!                   a key twice in one object             else 400 WG-BODY-003/4/5/7/8, 413
//!                   query, form, multipart field and JSON values: no injection
//!                                                          else 400 WG-INJ-00x (mode block)
//! ```
//!
//! Other bodies (XML, binary, plain text) stream through unscanned: XML markup would look like
//! XSS to a value scanner, so content types are the control for them. Multipart file contents
//! are not scanned either (a PDF or an image is no query); their field names and file names are.
//!
//! Why each rule exists, as found in review: WSGI, Rack, PHP and CGI back ends read `_` and `-`
//! as one header name and join duplicates (`X_Wardgate_User` became an identity); werkzeug
//! reads the last of two `Content-Type` headers where the gateway checked the first; Tomcat,
//! Jetty and Spring resolve `..;` as `..`; parsers that keep the first of two equal JSON keys
//! would read the value that was not scanned.
//!
//! A browser or API client never sends dot-segments, encoded separators or double encoding in
//! a path: they exist to make two parsers disagree, so they are refused rather than repaired.

use std::cell::Cell;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::path::escape_at;
use crate::refusal::Refusal;
use crate::sanitize::config::{InjectionMode, JsonLimits, MethodName, RouteSanitize, Sanitize};
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
    if decoded.split('/').any(is_dot_segment) {
        return Err(Refusal::PathDotSegment);
    }
    Ok(())
}

/// `.` and `..`, also with path parameters: Tomcat, Jetty and Spring drop what follows `;` in
/// a segment (`;jsessionid=…`) before they resolve dot-segments, so `..;x` is `..` to them.
fn is_dot_segment(segment: &str) -> bool {
    let name = segment.split(';').next().unwrap_or(segment);
    name == "." || name == ".."
}

/// Request headers that must appear at most once: with two, the gateway could check one value
/// while the back end reads the other.
const SINGLE_VALUED: [HeaderName; 16] = [
    header::HOST,
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::ORIGIN,
    header::REFERER,
    header::USER_AGENT,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::MAX_FORWARDS,
    header::RANGE,
    HeaderName::from_static("sec-fetch-site"),
    HeaderName::from_static("sec-fetch-mode"),
    HeaderName::from_static("x-request-id"),
];

/// Headers through which a client asks a back end to treat the request as another method.
pub const METHOD_OVERRIDE_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-http-method"),
];

/// Header rules that hold for every request, routed or not.
///
/// HTTP/2 may split `Cookie` into several fields (RFC 9113 section 8.2.3); on HTTP/1 a second
/// `Cookie` line is refused like the other single-valued headers.
pub fn check_headers(
    headers: &HeaderMap,
    version: Version,
    allow_underscores: bool,
) -> Result<(), Refusal> {
    if !allow_underscores && headers.keys().any(|name| name.as_str().contains('_')) {
        return Err(Refusal::HeaderUnderscore);
    }
    // Most requests repeat no header at all: then there is nothing to look up.
    if headers.len() == headers.keys_len() {
        return Ok(());
    }
    let repeated = |name: &HeaderName| headers.get_all(name).iter().nth(1).is_some();
    if SINGLE_VALUED.iter().any(repeated)
        || METHOD_OVERRIDE_HEADERS.iter().any(repeated)
        || (version < Version::HTTP_2 && repeated(&header::COOKIE))
    {
        return Err(Refusal::HeaderRepeated);
    }
    Ok(())
}

/// The method a client asks for through an override, checked against `allowed`: a value that
/// is not a method name is refused, and so is a method the route does not allow.
fn check_override(value: &[u8], allowed: &[Method]) -> Result<(), Refusal> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_alphabetic) {
        return Err(Refusal::MethodOverrideInvalid);
    }
    let method = Method::from_bytes(&value.to_ascii_uppercase())
        .map_err(|_| Refusal::MethodOverrideInvalid)?;
    if allowed.contains(&method) {
        Ok(())
    } else {
        Err(Refusal::MethodNotAllowed)
    }
}

/// The form field and query parameter that Rails, Laravel and Express read as the method.
const METHOD_OVERRIDE_FIELD: &str = "_method";

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
    Multipart(Boundary),
}

/// A multipart boundary (RFC 2046 section 5.1.1: 1 to 70 characters), kept inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Boundary {
    bytes: [u8; 70],
    len: u8,
}

impl Boundary {
    fn parse(text: &[u8]) -> Option<Self> {
        let bchar = |b: &u8| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(b);
        if text.is_empty() || text.len() > 70 || text.ends_with(b" ") || !text.iter().all(bchar) {
            return None;
        }
        let mut bytes = [0u8; 70];
        bytes[..text.len()].copy_from_slice(text);
        Some(Self {
            bytes,
            len: text.len() as u8,
        })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for Boundary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Boundary({:?})",
            String::from_utf8_lossy(self.as_bytes())
        )
    }
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
        query: Option<&str>,
        has_body: bool,
    ) -> Result<BodyPlan, Refusal> {
        if !self.methods.contains(method) {
            return Err(Refusal::MethodNotAllowed);
        }
        for name in &METHOD_OVERRIDE_HEADERS {
            if let Some(value) = headers.get(name) {
                check_override(value.as_bytes(), &self.methods)?;
            }
        }
        // Decoded only when it could name `_method`: most queries are neither encoded nor do.
        let query = query.filter(|q| q.contains(METHOD_OVERRIDE_FIELD) || q.contains('%'));
        for (name, value) in query.into_iter().flat_map(injection::query_pairs) {
            if name == METHOD_OVERRIDE_FIELD {
                check_override(value.as_bytes(), &self.methods)?;
            }
        }
        if !has_body {
            return Ok(BodyPlan::Empty);
        }
        let announced = content_length(headers)?;
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
            Some("multipart/form-data") => Some(BodyKind::Multipart(
                multipart_boundary(headers).ok_or(Refusal::MalformedMultipart)?,
            )),
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
                let value = parse_json(body)?;
                scan.then(|| injection::scan_json(&value, &self.allow_fields))
                    .flatten()
            }
            BodyKind::Form => {
                let mut finding = None;
                for pair in injection::form_pairs(body) {
                    let (name, value) = pair.map_err(|_| Refusal::MalformedForm)?;
                    if name == METHOD_OVERRIDE_FIELD {
                        check_override(value.as_bytes(), &self.methods)?;
                    }
                    if finding.is_none() && scan {
                        finding = injection::scan_pair("form", &name, &value, &self.allow_fields);
                    }
                }
                finding
            }
            BodyKind::Multipart(boundary) => {
                let mut finding = None;
                for part in multipart_parts(body, boundary.as_bytes())? {
                    if part.filename.is_none() && part.name == METHOD_OVERRIDE_FIELD {
                        check_override(part.value, &self.methods)?;
                    }
                    if finding.is_some() || !scan {
                        continue;
                    }
                    // File contents are data, not parameters: only their names are scanned.
                    let value = match part.filename {
                        Some(filename) => filename,
                        None => String::from_utf8_lossy(part.value).into_owned(),
                    };
                    finding =
                        injection::scan_pair("multipart", &part.name, &value, &self.allow_fields);
                }
                finding
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

/// Parses a JSON body, refusing an object that names a key twice (RFC 8259 section 4 leaves
/// the meaning to each parser: some keep the first value, serde_json the last).
fn parse_json(body: &[u8]) -> Result<Value, Refusal> {
    let duplicate = Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = StrictJson(&duplicate)
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    match value {
        Ok(value) => Ok(value),
        Err(_) if duplicate.get() => Err(Refusal::JsonDuplicateKey),
        Err(_) => Err(Refusal::MalformedJson),
    }
}

/// Builds a [`Value`] like serde_json does, but fails on a repeated object key (and says so in
/// the flag, to tell it from a syntax error).
#[derive(Clone, Copy)]
struct StrictJson<'a>(&'a Cell<bool>);

impl<'de> DeserializeSeed<'de> for StrictJson<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictJson<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                self.0.set(true);
                return Err(serde::de::Error::custom("duplicate key"));
            }
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// The `boundary` parameter of a `multipart/form-data` content type (quoted or not).
fn multipart_boundary(headers: &HeaderMap) -> Option<Boundary> {
    let value = headers.get(header::CONTENT_TYPE)?.as_bytes();
    value.split(|&b| b == b';').skip(1).find_map(|parameter| {
        let (name, text) = parameter
            .trim_ascii()
            .split_at(parameter.trim_ascii().iter().position(|&b| b == b'=')?);
        if !name.eq_ignore_ascii_case(b"boundary") {
            return None;
        }
        let text = &text[1..];
        let text = match text {
            [b'"', inner @ .., b'"'] => inner,
            _ => text,
        };
        Boundary::parse(text)
    })
}

/// One part of a multipart body: its field name, its file name when it is a file, its bytes.
struct Part<'a> {
    name: String,
    filename: Option<String>,
    value: &'a [u8],
}

/// Part headers the parser reads at most; a real form part has two or three.
const MAX_PART_HEADERS: usize = 16;

/// Splits a `multipart/form-data` body (RFC 7578, RFC 2046 section 5.1.1) into parts, strictly:
/// the body starts with the first delimiter, lines end in CRLF, every part has a
/// `Content-Disposition: form-data` with a name, and the close delimiter ends the body (an
/// epilogue of line breaks only). Anything else is [`Refusal::MalformedMultipart`]: a back end
/// with a more lenient parser could find fields the gateway never saw.
fn multipart_parts<'a>(body: &'a [u8], boundary: &[u8]) -> Result<Vec<Part<'a>>, Refusal> {
    const BAD: Refusal = Refusal::MalformedMultipart;
    let mut delimiter = Vec::with_capacity(boundary.len() + 4);
    delimiter.extend_from_slice(b"\r\n--");
    delimiter.extend_from_slice(boundary);
    // The first delimiter has no CRLF before it.
    let mut rest = body.strip_prefix(&delimiter[2..]).ok_or(BAD)?;
    let mut parts = Vec::new();
    loop {
        if let Some(epilogue) = rest.strip_prefix(b"--") {
            return if epilogue.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                Ok(parts)
            } else {
                Err(BAD)
            };
        }
        rest = rest.strip_prefix(b"\r\n").ok_or(BAD)?;
        let (mut name, mut filename, mut disposition) = (None, None, false);
        for count in 0.. {
            let end = memchr::memmem::find(rest, b"\r\n").ok_or(BAD)?;
            let line = &rest[..end];
            rest = &rest[end + 2..];
            if line.is_empty() {
                break;
            }
            if count == MAX_PART_HEADERS {
                return Err(BAD);
            }
            let colon = line.iter().position(|&b| b == b':').ok_or(BAD)?;
            let (field, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if field.eq_ignore_ascii_case(b"content-disposition") {
                if disposition {
                    return Err(BAD);
                }
                disposition = true;
                (name, filename) = content_disposition(value).ok_or(BAD)?;
            }
        }
        let end = memchr::memmem::find(rest, &delimiter).ok_or(BAD)?;
        parts.push(Part {
            name: name.filter(|_| disposition).ok_or(BAD)?,
            filename,
            value: &rest[..end],
        });
        rest = &rest[end + delimiter.len()..];
    }
}

/// `form-data; name="field"[; filename="x.pdf"]`: the name and the file name.
fn content_disposition(value: &[u8]) -> Option<(Option<String>, Option<String>)> {
    let mut parameters = value.split(|&b| b == b';');
    if !parameters
        .next()?
        .trim_ascii()
        .eq_ignore_ascii_case(b"form-data")
    {
        return None;
    }
    let (mut name, mut filename) = (None, None);
    for parameter in parameters {
        let parameter = parameter.trim_ascii();
        let at = parameter.iter().position(|&b| b == b'=')?;
        let text = match &parameter[at + 1..] {
            [b'"', inner @ .., b'"'] => inner,
            text => text,
        };
        let text = std::str::from_utf8(text).ok()?.to_owned();
        let slot = match parameter[..at].to_ascii_lowercase().as_slice() {
            b"name" => &mut name,
            b"filename" => &mut filename,
            _ => continue,
        };
        if slot.replace(text).is_some() {
            return None;
        }
    }
    Some((name, filename))
}

/// The announced `Content-Length`: plain decimal digits only (a `+5` or a number too large for
/// 64 bits is refused as too large), so that the length forwarded can be written canonically.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Refusal> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    let digits = value.as_bytes();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Refusal::BodyTooLarge);
    }
    digits
        .iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .map(Some)
        .ok_or(Refusal::BodyTooLarge)
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
        // The first byte above the controls, and the last below DEL, are plain characters.
        assert_eq!(check_path("/a%20b/%7E", false), Ok(()));
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
    fn header_rules() {
        let h1 = Version::HTTP_11;
        let plain = head(&[("accept", "*/*"), ("x-trace", "1")]);
        assert_eq!(check_headers(&plain, h1, false), Ok(()));
        let underscore = head(&[("accept", "*/*"), ("x_wardgate_user", "admin")]);
        assert_eq!(
            check_headers(&underscore, h1, false),
            Err(Refusal::HeaderUnderscore)
        );
        assert_eq!(check_headers(&underscore, h1, true), Ok(()));
        // A repeated header that may repeat, alone and beside a single-valued one said once.
        let mut twice = head(&[("host", "ehr"), ("accept", "a")]);
        twice.append(header::ACCEPT, HeaderValue::from_static("b"));
        assert_eq!(check_headers(&twice, h1, false), Ok(()));
        for name in ["content-type", "x-http-method", "x-request-id"] {
            let mut headers = twice.clone();
            for value in ["1", "2"] {
                headers.append(
                    HeaderName::try_from(name).unwrap(),
                    HeaderValue::from_static(value),
                );
            }
            assert_eq!(
                check_headers(&headers, h1, false),
                Err(Refusal::HeaderRepeated),
                "{name}"
            );
        }
        let mut cookies = head(&[("cookie", "a=1")]);
        cookies.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(
            check_headers(&cookies, h1, false),
            Err(Refusal::HeaderRepeated)
        );
        assert_eq!(check_headers(&cookies, Version::HTTP_2, false), Ok(()));
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

    /// A multipart body under the boundary `b`: each part's header lines and value, then the
    /// close delimiter.
    fn multipart(parts: &[(&str, &str)]) -> String {
        let mut body: String = parts
            .iter()
            .map(|(headers, value)| format!("--b\r\n{headers}\r\n\r\n{value}\r\n"))
            .collect();
        body.push_str("--b--");
        body
    }

    fn boundary_b() -> BodyKind {
        BodyKind::Multipart(Boundary::parse(b"b").unwrap())
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
            default.check_head(&Method::TRACE, &HeaderMap::new(), None, false),
            Err(Refusal::MethodNotAllowed)
        );
        assert_eq!(
            default.check_head(&Method::CONNECT, &HeaderMap::new(), None, false),
            Err(Refusal::MethodNotAllowed)
        );
        assert_eq!(
            default.check_head(&Method::GET, &HeaderMap::new(), None, false),
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
            strict.check_head(&Method::DELETE, &HeaderMap::new(), None, false),
            Err(Refusal::MethodNotAllowed)
        );
        assert_eq!(strict.allow_header(), "GET, POST");
        let fhir = head(&[
            ("content-type", "application/fhir+json; charset=utf-8"),
            ("content-length", "50"),
        ]);
        assert_eq!(
            strict.check_head(&Method::POST, &fhir, None, true),
            Ok(BodyPlan::Inspect {
                kind: BodyKind::Json,
                limit: 100
            })
        );
        let full = head(&[
            ("content-type", "application/fhir+json"),
            ("content-length", "100"),
        ]);
        assert_eq!(
            strict.check_head(&Method::POST, &full, None, true),
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
            strict.check_head(&Method::POST, &big, None, true),
            Err(Refusal::BodyTooLarge)
        );
        let xml = head(&[("content-type", "application/fhir+xml")]);
        assert_eq!(
            strict.check_head(&Method::POST, &xml, None, true),
            Err(Refusal::UnsupportedMediaType)
        );
        assert_eq!(
            strict.check_head(&Method::POST, &HeaderMap::new(), None, true),
            Err(Refusal::UnsupportedMediaType)
        );

        let octets = head(&[("content-type", "application/octet-stream")]);
        assert_eq!(
            default.check_head(&Method::PUT, &octets, None, true),
            Ok(BodyPlan::Stream { limit: 10 << 20 })
        );
        // JSON is read whole, so it has its own, smaller cap below the route's.
        let json = |length: &str| {
            let headers = head(&[
                ("content-type", "application/json"),
                ("content-length", length),
            ]);
            default.check_head(&Method::POST, &headers, None, true)
        };
        assert_eq!(
            json("1048576"),
            Ok(BodyPlan::Inspect {
                kind: BodyKind::Json,
                limit: 1 << 20
            })
        );
        assert_eq!(json("1048577"), Err(Refusal::BodyTooLarge));
        let form = head(&[("content-type", "application/x-www-form-urlencoded")]);
        assert_eq!(
            default.check_head(&Method::POST, &form, None, true),
            Ok(BodyPlan::Inspect {
                kind: BodyKind::Form,
                limit: 10 << 20
            })
        );
    }

    #[test]
    fn content_lengths_are_plain_decimal_digits() {
        let length = |value: &str| content_length(&head(&[("content-length", value)]));
        assert_eq!(content_length(&HeaderMap::new()), Ok(None));
        assert_eq!(length("0"), Ok(Some(0)));
        assert_eq!(length("18446744073709551615"), Ok(Some(u64::MAX)));
        for bad in ["", "+5", "-1", "5a", " 5", "0x10", "18446744073709551616"] {
            assert_eq!(length(bad), Err(Refusal::BodyTooLarge), "{bad:?}");
        }
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
        let deepest = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert_eq!(
            default.check_body(BodyKind::Json, deepest.as_bytes()),
            Ok(None)
        );
        let wide = format!("[{}[]]", "[{}],".repeat(40));
        assert_eq!(
            default.check_body(BodyKind::Json, wide.as_bytes()),
            Ok(None)
        );
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
        let escaped_quotes = format!(r#"{{"note":"a \"{}\" \\","n":1}}"#, "[".repeat(100));
        assert_eq!(
            default.check_body(BodyKind::Json, escaped_quotes.as_bytes()),
            Ok(None)
        );
        let after_a_string = format!(r#"["x",{}{}]"#, "[".repeat(33), "]".repeat(33));
        assert_eq!(
            default.check_body(BodyKind::Json, after_a_string.as_bytes()),
            Err(Refusal::JsonTooDeep)
        );
        let after_an_escape = format!(r#"["x\\",{}{}]"#, "[".repeat(33), "]".repeat(33));
        assert_eq!(
            default.check_body(BodyKind::Json, after_an_escape.as_bytes()),
            Err(Refusal::JsonTooDeep)
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
    fn method_overrides_must_name_an_allowed_method() {
        let allowed = [Method::GET, Method::POST];
        assert_eq!(check_override(b" get ", &allowed), Ok(()));
        assert_eq!(check_override(b"POST", &allowed), Ok(()));
        assert_eq!(
            check_override(b"DELETE", &allowed),
            Err(Refusal::MethodNotAllowed)
        );
        for value in [&b""[..], b"  ", b"GE T", b"GET;", b"P0ST"] {
            assert_eq!(
                check_override(value, &allowed),
                Err(Refusal::MethodOverrideInvalid),
                "{value:?}"
            );
        }

        let strict = rules(RouteSanitize {
            methods: Some(vec![MethodName(Method::GET), MethodName(Method::POST)]),
            ..RouteSanitize::default()
        });
        let post =
            |headers: &HeaderMap, query| strict.check_head(&Method::POST, headers, query, false);
        for name in [
            "x-http-method-override",
            "x-method-override",
            "x-http-method",
        ] {
            assert_eq!(post(&head(&[(name, "GET")]), None), Ok(BodyPlan::Empty));
            assert_eq!(
                post(&head(&[(name, "DELETE")]), None),
                Err(Refusal::MethodNotAllowed),
                "{name}"
            );
        }
        let none = HeaderMap::new();
        assert_eq!(post(&none, Some("a=1&_method=GET")), Ok(BodyPlan::Empty));
        for query in ["a=1&_method=DELETE", "%5Fmethod=DELETE", "_method=%44ELETE"] {
            assert_eq!(
                post(&none, Some(query)),
                Err(Refusal::MethodNotAllowed),
                "{query}"
            );
        }
        assert_eq!(
            strict.check_body(BodyKind::Form, b"a=1&_method=DELETE"),
            Err(Refusal::MethodNotAllowed)
        );
        let field = multipart(&[("Content-Disposition: form-data; name=_method", "DELETE")]);
        assert_eq!(
            strict.check_body(boundary_b(), field.as_bytes()),
            Err(Refusal::MethodNotAllowed)
        );
        // A file that happens to be named `_method` is data.
        let file = multipart(&[(
            "Content-Disposition: form-data; name=_method; filename=m.txt",
            "DELETE",
        )]);
        assert_eq!(strict.check_body(boundary_b(), file.as_bytes()), Ok(None));
    }

    #[test]
    fn multipart_boundaries() {
        let boundary = |text: &str| Boundary::parse(text.as_bytes()).map(|b| b.as_bytes().to_vec());
        assert_eq!(boundary("xyz"), Some(b"xyz".to_vec()));
        assert_eq!(
            format!("{:?}", Boundary::parse(b"xyz").unwrap()),
            "Boundary(\"xyz\")"
        );
        let specials = "'()+_,-./:=? x";
        assert_eq!(boundary(specials), Some(specials.as_bytes().to_vec()));
        assert!(boundary(&"a".repeat(70)).is_some());
        for bad in ["", "x ", "a\"b", "a;b", "a\tb", &"a".repeat(71)] {
            assert_eq!(boundary(bad), None, "{bad:?}");
        }

        let default = rules(RouteSanitize::default());
        let plan = |content_type| {
            default.check_head(
                &Method::POST,
                &head(&[("content-type", content_type)]),
                None,
                true,
            )
        };
        for (content_type, text) in [
            ("multipart/form-data; boundary=xyz", "xyz"),
            (
                "Multipart/Form-Data; charset=utf-8; BOUNDARY=\"a b\"",
                "a b",
            ),
        ] {
            assert_eq!(
                plan(content_type),
                Ok(BodyPlan::Inspect {
                    kind: BodyKind::Multipart(Boundary::parse(text.as_bytes()).unwrap()),
                    limit: 10 << 20
                }),
                "{content_type}"
            );
        }
        for content_type in [
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=\"a b \"",
            "multipart/form-data; charset=utf-8",
        ] {
            assert_eq!(
                plan(content_type),
                Err(Refusal::MalformedMultipart),
                "{content_type}"
            );
        }
    }

    #[test]
    fn multipart_bodies_are_read_strictly_and_their_fields_scanned() {
        let default = rules(RouteSanitize::default());
        let check = |body: &str| default.check_body(boundary_b(), body.as_bytes());
        let disposition = "Content-Disposition: form-data";
        let good = format!(
            "--b\r\n{disposition}; name=\"note\"\r\n\r\nO'Brien\r\n\
             --b\r\ncontent-disposition: FORM-DATA; name=scan; filename=\"x-ray.png\"\r\n\
             Content-Type: image/png\r\n\r\n1' OR '1'='1 <script>\r\n--b--\r\n"
        );
        assert_eq!(check(&good), Ok(None), "file contents are not scanned");
        assert_eq!(check("--b--"), Ok(None));
        assert_eq!(
            check(&multipart(&[(
                &format!("{disposition}; name=note"),
                "1' OR '1'='1"
            )])),
            Err(Refusal::Injection(injection::Attack::SqlInjection))
        );
        let script_name =
            format!("{disposition}; name=f; filename=\"<script>alert(1)</script>.png\"");
        assert_eq!(
            check(&multipart(&[(&script_name, "x")])),
            Err(Refusal::Injection(injection::Attack::CrossSiteScripting))
        );
        // Sixteen part headers at most.
        let headers = |extra: usize| format!("{}{disposition}; name=a", "X-A: 1\r\n".repeat(extra));
        assert_eq!(check(&multipart(&[(&headers(15), "x")])), Ok(None));
        for body in [
            format!("preamble\r\n{good}"),
            good.replace("\r\n", "\n"),
            good.replace("--b--\r\n", "--b--\r\ntrailing"),
            good.replace("\r\n--b--\r\n", ""),
            multipart(&[("X-A: 1", "x")]),
            multipart(&[(disposition, "x")]),
            multipart(&[("Content-Disposition: attachment; name=a", "x")]),
            multipart(&[(
                &format!("{disposition}; name=a\r\n{disposition}; name=b"),
                "x",
            )]),
            multipart(&[(&format!("{disposition}; name=a; name=b"), "x")]),
            multipart(&[(&format!("{disposition}; name"), "x")]),
            multipart(&[("no colon", "x")]),
            multipart(&[(&headers(16), "x")]),
        ] {
            assert_eq!(check(&body), Err(Refusal::MalformedMultipart), "{body:?}");
        }
    }

    #[test]
    fn json_is_read_as_serde_json_reads_it_but_a_repeated_key_is_refused() {
        let body = br#"{"t":true,"f":false,"i":-7,"u":18446744073709551615,"x":1.5,"n":null,
            "s":"plain","e":"esc\"aped \u00e9","a":[1,{"k":[]}],"o":{}}"#;
        assert_eq!(
            parse_json(body),
            Ok(serde_json::from_slice::<Value>(body).unwrap())
        );
        assert_eq!(parse_json(b"[1, 2] 3"), Err(Refusal::MalformedJson));
        assert_eq!(parse_json(br#"[{"a":1},{"a":2}]"#).map(|_| ()), Ok(()));
        for repeated in [&br#"{"a":1,"a":2}"#[..], br#"{"x":[{"b":{},"b":1}]}"#] {
            assert_eq!(parse_json(repeated), Err(Refusal::JsonDuplicateKey));
        }
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

        // The first finding in a form or a multipart body stands, whatever follows it; with
        // the scan off there is none.
        let form = b"q=1%27%20OR%20%271%27%3D%271&b=ok";
        let parts = multipart(&[
            ("Content-Disposition: form-data; name=q", "1' OR '1'='1"),
            ("Content-Disposition: form-data; name=b", "ok"),
        ]);
        let sqli = Err(Refusal::Injection(injection::Attack::SqlInjection));
        assert_eq!(block.check_body(BodyKind::Form, form), sqli);
        assert_eq!(block.check_body(boundary_b(), parts.as_bytes()), sqli);
        let off = rules(mode(InjectionMode::Off));
        assert_eq!(off.check_body(BodyKind::Form, form), Ok(None));
        assert_eq!(off.check_body(boundary_b(), parts.as_bytes()), Ok(None));
    }
}
