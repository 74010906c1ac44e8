//! The `sanitize:` section of the configuration file, and a route's `sanitize:` overrides: the
//! request rules `request.rs` and `injection.rs` enforce. Defaults are the safe choice.

use serde::Deserialize;

use crate::units::ByteSize;

/// Request rules (see `sanitize::request`). Defaults are the safe choice.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sanitize {
    /// Host names (no port) the gateway answers for; empty accepts any, with a warning.
    pub server_names: Vec<String>,
    /// Methods allowed unless a route says otherwise. `TRACE` and `CONNECT` only if listed.
    pub methods: Vec<MethodName>,
    pub max_body_size: ByteSize,
    /// `Content-Type` allow list (media types, no parameters); empty accepts any.
    pub content_types: Vec<String>,
    pub json: JsonLimits,
    /// Accept `%2F` / `%5C` in paths (some FHIR servers need it); refused by default.
    pub allow_encoded_slash: bool,
    /// Accept request header names with `_` (nginx's `underscores_in_headers`); refused by
    /// default: CGI-style back ends read `_` as `-`. Identity headers are stripped either way.
    pub allow_underscores_in_headers: bool,
    pub injection: Injection,
}

impl Default for Sanitize {
    fn default() -> Self {
        Self {
            server_names: Vec::new(),
            methods: [
                http::Method::GET,
                http::Method::HEAD,
                http::Method::POST,
                http::Method::PUT,
                http::Method::PATCH,
                http::Method::DELETE,
                http::Method::OPTIONS,
            ]
            .into_iter()
            .map(MethodName)
            .collect(),
            max_body_size: ByteSize(10 << 20),
            content_types: Vec::new(),
            json: JsonLimits::default(),
            allow_encoded_slash: false,
            allow_underscores_in_headers: false,
            injection: Injection::default(),
        }
    }
}

impl Sanitize {
    /// `server_names`, lower case, as requests are compared with them.
    pub fn host_names(&self) -> Vec<String> {
        self.server_names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect()
    }
}

/// JSON bodies are read whole (up to `max_size`) and must parse, nested at most `max_depth`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonLimits {
    pub max_depth: usize,
    pub max_size: ByteSize,
}

impl Default for JsonLimits {
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_size: ByteSize(1 << 20),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Injection {
    pub mode: InjectionMode,
    /// Fields whose values are not scanned: JSON paths (`text.div` matches any path ending in
    /// it) and query or form parameter names.
    pub allow_fields: Vec<String>,
}

impl Default for Injection {
    fn default() -> Self {
        Self {
            mode: InjectionMode::Block,
            allow_fields: vec!["text.div".to_owned()],
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InjectionMode {
    Off,
    Log,
    #[default]
    Block,
}

/// Per-route overrides; anything absent comes from the global `sanitize` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSanitize {
    #[serde(default)]
    pub methods: Option<Vec<MethodName>>,
    #[serde(default)]
    pub max_body_size: Option<ByteSize>,
    #[serde(default)]
    pub content_types: Option<Vec<String>>,
    #[serde(default)]
    pub json: Option<JsonLimits>,
    #[serde(default)]
    pub injection: Option<Injection>,
}

/// An HTTP method name as written in the config (`GET`, `PROPFIND`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct MethodName(pub http::Method);

impl TryFrom<String> for MethodName {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "`{text}` is not a method name (upper-case letters, e.g. GET)"
            ));
        }
        http::Method::from_bytes(text.as_bytes())
            .map(Self)
            .map_err(|_| format!("`{text}` is not a method name"))
    }
}
