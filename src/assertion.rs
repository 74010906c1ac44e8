//! The identity assertion: a short-lived signed JWT that tells an upstream who the user is.
//!
//! **The threat.** An upstream behind the gateway that trusts plain headers (`X-User: alice`)
//! believes anyone who can reach it directly, or any route that forgets to strip the header. A
//! token that lives long, or that names every attribute of the user, is worth stealing from an
//! upstream's logs; one signed with a shared secret lets every upstream mint tokens for the others.
//!
//! **The rule.** For each proxied request of an authenticated user the gateway signs a JWT with an
//! Ed25519 key that only it holds; upstreams verify it with the public key, published as a JWKS at
//! [`crate::own_api::paths::JWKS`], and can never sign one. The token is bound to one route (`aud`), lives
//! [`DEFAULT_TTL`] seconds unless the caller says otherwise, carries a random 128-bit `jti` so an
//! upstream can refuse a replay, and names the session only by a hash (`sid`). `name` and `roles`
//! are present only when the route asks for them (least privilege).
//!
//! ```text
//!  gateway                                        upstream
//!  AssertionKey::load_or_create(file, 0600)
//!  Claims::new(sub, route, now, ttl, auth_time, H(session id), jti)
//!    └─ sign ─▶ X-Wardgate-Assertion: <header>.<claims>.<Ed25519 signature>
//!                                                  │ kid ─▶ key from GET /.wardgate/jwks.json
//!                                                  │ alg == EdDSA, signature over the first two
//!                                                  │ aud == this route, now < exp,
//!                                                  ▼ iat <= now + skew        (see verify)
//! ```
//!
//! The key file is a PEM `PRIVATE KEY` (RFC 7468 section 10: PKCS#8, as aws-lc-rs generates it;
//! `openssl genpkey -algorithm ed25519` output loads too). It is created with mode 0600 in a
//! directory created 0700, written to a temporary file and linked into place so that a crash never
//! leaves half a key and two gateways starting together end up with the same one. A key file that
//! group or others can read is refused, as is anything that is not an Ed25519 key. The key id is
//! the RFC 7638 thumbprint of the public key, so it changes exactly when the key does.
//!
//! **The standard.** RFC 7515 (JWS compact serialization), RFC 7519 (JWT claims; section 7.2
//! validation), RFC 8037 (`OKP` keys, `EdDSA`), RFC 7638 (JWK thumbprint as `kid`), RFC 8725
//! (JWT best current practice: one fixed algorithm, audience checked, short lifetime), OWASP ASVS 5
//! V9 (self-contained tokens) and V11 (cryptography).
//!
//! Time and randomness are parameters: `now` (unix seconds) and `jti` come from the caller. The
//! private key never appears in `Debug` output or in the JWKS.

use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The request header that carries the assertion to the upstream.
pub const HEADER: &str = "x-wardgate-assertion";
/// The key file's suggested name inside the data directory.
pub const KEY_FILE: &str = "assertion.key";
/// The default `iss` claim.
pub const ISSUER: &str = "wardgate";
/// Suggested lifetime of one assertion, in seconds: one request, plus transit.
pub const DEFAULT_TTL: u64 = 60;
/// How far in the future [`verify`] lets `iat` be: the upstream's clock may run behind.
pub const CLOCK_SKEW: u64 = 5;
/// [`verify`] refuses longer tokens before decoding anything.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

const ALG: &str = "EdDSA";
const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";
/// A PEM Ed25519 key is about 170 bytes; anything much larger is not one.
const MAX_KEY_FILE: u64 = 4096;

/// Why the signing key could not be loaded or created. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum AssertionKeyError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} has mode {mode:04o}; the assertion signing key must be readable by its owner only \
         (chmod 600)",
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error(
        "{} is not an Ed25519 private key ({reason}); it must be a PEM \"PRIVATE KEY\" (PKCS#8). \
         Restore it, or delete it to create a new key (upstreams then need the new JWKS)",
        path.display()
    )]
    Corrupt { path: PathBuf, reason: &'static str },
    #[error("the Ed25519 signing key could not be generated")]
    Generate,
    /// Kept in a store outside the process (PostgreSQL), which could not give it.
    #[error("the assertion signing key in the shared store: {0}")]
    Shared(String),
}

/// The gateway's Ed25519 signing key, with its public half encoded for the JWKS.
pub struct AssertionKey {
    pair: Ed25519KeyPair,
    /// The public key, base64url (RFC 8037 section 2).
    x: String,
    /// RFC 7638 thumbprint of the public JWK.
    kid: String,
}

impl AssertionKey {
    /// Loads the key from `path`, or creates it there when the file is missing. The flag is true
    /// when the key was created now (the caller logs it: upstreams must fetch the new JWKS).
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), AssertionKeyError> {
        match Self::load(path) {
            Err(AssertionKeyError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            other => return other.map(|key| (key, false)),
        }
        match Self::create(path) {
            Ok(key) => Ok((key, true)),
            // Another process created it between our read and our link: use theirs.
            Err(AssertionKeyError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                Self::load(path).map(|key| (key, false))
            }
            Err(error) => Err(error),
        }
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public keys as a JWKS document, to serve at [`crate::own_api::paths::JWKS`].
    pub fn jwks(&self) -> Value {
        json!({ "keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "x": self.x,
            "kid": self.kid,
            "alg": ALG,
            "use": "sig",
        }]})
    }

    /// Signs `claims` as a compact JWS (`header.payload.signature`).
    pub fn sign(&self, claims: &Claims) -> String {
        let header = json!({ "alg": ALG, "typ": "JWT", "kid": self.kid });
        self.jws(
            header.to_string().as_bytes(),
            claims.to_json().to_string().as_bytes(),
        )
    }

    fn jws(&self, header: &[u8], payload: &[u8]) -> String {
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature = self.pair.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        token
    }

    /// An Ed25519 signature of `message` (the audit trail's checkpoints).
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    /// The raw public key (32 bytes), which verifies [`AssertionKey::sign_bytes`].
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    fn from_pair(pair: Ed25519KeyPair) -> Self {
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let kid = thumbprint(&x);
        Self { pair, x, kid }
    }

    fn load(path: &Path) -> Result<Self, AssertionKeyError> {
        let der = Self::read_pkcs8(path)?;
        Self::from_pkcs8(&der).map_err(|reason| AssertionKeyError::Corrupt {
            path: path.to_owned(),
            reason,
        })
    }

    /// The PKCS#8 document of the key file at `path`, for a store that takes the key over.
    pub(crate) fn read_pkcs8(path: &Path) -> Result<Zeroizing<Vec<u8>>, AssertionKeyError> {
        use crate::secret_file::SecretFileError as E;
        let corrupt = |reason| AssertionKeyError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let text = crate::secret_file::read(path, MAX_KEY_FILE).map_err(|error| match error {
            E::Io(source) => AssertionKeyError::Io {
                path: path.to_owned(),
                source,
            },
            E::NotAFile => AssertionKeyError::NotAFile {
                path: path.to_owned(),
            },
            E::Permissions(mode) => AssertionKeyError::Permissions {
                path: path.to_owned(),
                mode,
            },
            E::TooLarge(_) => corrupt("too large"),
            E::NotText => corrupt("not text"),
        })?;
        let der = decode_pem(&text).ok_or_else(|| corrupt("not a PEM \"PRIVATE KEY\" block"))?;
        Ok(Zeroizing::new(der))
    }

    fn create(path: &Path) -> Result<Self, AssertionKeyError> {
        let (key, der) = Self::generate()?;
        crate::secret_file::create_new(path, encode_pem(&der).as_bytes()).map_err(|source| {
            AssertionKeyError::Io {
                path: path.to_owned(),
                source,
            }
        })?;
        Ok(key)
    }

    /// A new key, and its PKCS#8 document for whatever store keeps it.
    pub(crate) fn generate() -> Result<(Self, Zeroizing<Vec<u8>>), AssertionKeyError> {
        // AWS-LC draws the key from its own DRBG; the rng argument is there for ring's API.
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| AssertionKeyError::Generate)?;
        let der = Zeroizing::new(der.as_ref().to_vec());
        let key = Self::from_pkcs8(&der).map_err(|_| AssertionKeyError::Generate)?;
        Ok((key, der))
    }

    /// The key in a PKCS#8 document, as [`AssertionKey::generate`] gives it.
    pub(crate) fn from_pkcs8(der: &[u8]) -> Result<Self, &'static str> {
        Ed25519KeyPair::from_pkcs8(der)
            .map(Self::from_pair)
            .map_err(|_| "the PKCS#8 document holds no valid Ed25519 key")
    }
}

impl fmt::Debug for AssertionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssertionKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// RFC 7638: SHA-256 over the required members of the JWK, in lexicographic order, no spaces.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

fn encode_pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = format!("{PEM_BEGIN}\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(PEM_END);
    pem.push('\n');
    pem
}

/// One `PRIVATE KEY` block, nothing but blank lines around it (RFC 7468 strict form, CRLF ok).
fn decode_pem(text: &str) -> Option<Vec<u8>> {
    let mut lines = text
        .lines()
        .map(str::trim_end)
        .skip_while(|line| line.is_empty());
    if lines.next()? != PEM_BEGIN {
        return None;
    }
    let mut body = String::new();
    loop {
        let line = lines.next()?;
        if line == PEM_END {
            break;
        }
        body.push_str(line);
    }
    if !lines.all(str::is_empty) {
        return None;
    }
    STANDARD.decode(body).ok()
}

/// The claims of one assertion (RFC 7519 section 4). Build with [`Claims::new`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// The route name: a token for one upstream is refused by the others.
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    /// When the user last proved the second factor (unix seconds), for step-up decisions.
    pub auth_time: u64,
    /// base64url of a hash of the session id, never the id itself.
    pub sid: String,
    /// base64url of 128 random bits: an upstream can refuse a token it has seen.
    pub jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// Why the access policy let the request through, in HL7's purpose-of-use vocabulary
    /// (`TREAT`; `ETREAT` for break-glass): only on patient-data routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose_of_use: Option<String>,
    /// The access grants the decision rests on, when any do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<String>>,
    /// The patient whose data the request may reach (SMART's launch context `patient`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// What the decision allows, as SMART on FHIR v2 scopes, space-separated (`policy.fhir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// The access decision of a patient-data request, for [`Claims::with_access`].
pub struct AccessClaims {
    pub purpose_of_use: &'static str,
    pub grants: Vec<String>,
    pub patient: String,
    pub scopes: Vec<String>,
}

impl Claims {
    /// Claims for user `sub` on route `aud`, issued at `now` and valid for `ttl` seconds.
    /// `session_hash` must be a hash of the session id (e.g. SHA-256): the upstream must not learn
    /// a value it could present as a session cookie. `jti` must be fresh random bytes.
    pub fn new(
        sub: impl Into<String>,
        aud: impl Into<String>,
        now: u64,
        ttl: u64,
        auth_time: u64,
        session_hash: &[u8],
        jti: [u8; 16],
    ) -> Self {
        Self {
            iss: ISSUER.to_owned(),
            sub: sub.into(),
            aud: aud.into(),
            iat: now,
            exp: now.saturating_add(ttl),
            auth_time,
            sid: URL_SAFE_NO_PAD.encode(session_hash),
            jti: URL_SAFE_NO_PAD.encode(jti),
            name: None,
            roles: None,
            purpose_of_use: None,
            grants: None,
            patient: None,
            scope: None,
        }
    }

    /// Replaces the default issuer ([`ISSUER`]).
    pub fn with_issuer(mut self, iss: impl Into<String>) -> Self {
        self.iss = iss.into();
        self
    }

    /// Adds the display name: only for routes that ask for it.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds the roles: only for routes that ask for them.
    pub fn with_roles(mut self, roles: Vec<String>) -> Self {
        self.roles = Some(roles);
        self
    }

    /// Adds the access decision of a patient-data route: its purpose of use, the grants it
    /// rests on (if any), the patient, and the SMART scopes (if any).
    pub fn with_access(mut self, access: AccessClaims) -> Self {
        self.purpose_of_use = Some(access.purpose_of_use.to_owned());
        self.grants = (!access.grants.is_empty()).then_some(access.grants);
        self.patient = Some(access.patient);
        self.scope = (!access.scopes.is_empty()).then(|| access.scopes.join(" "));
        self
    }

    /// The same JSON as the `Serialize` derive, built without a fallible serializer so that
    /// signing cannot fail. A test keeps the two equal.
    fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("iss".into(), self.iss.clone().into());
        map.insert("sub".into(), self.sub.clone().into());
        map.insert("aud".into(), self.aud.clone().into());
        map.insert("iat".into(), self.iat.into());
        map.insert("exp".into(), self.exp.into());
        map.insert("auth_time".into(), self.auth_time.into());
        map.insert("sid".into(), self.sid.clone().into());
        map.insert("jti".into(), self.jti.clone().into());
        if let Some(name) = &self.name {
            map.insert("name".into(), name.clone().into());
        }
        if let Some(roles) = &self.roles {
            map.insert("roles".into(), roles.clone().into());
        }
        if let Some(purpose) = &self.purpose_of_use {
            map.insert("purpose_of_use".into(), purpose.clone().into());
        }
        if let Some(grants) = &self.grants {
            map.insert("grants".into(), grants.clone().into());
        }
        if let Some(patient) = &self.patient {
            map.insert("patient".into(), patient.clone().into());
        }
        if let Some(scope) = &self.scope {
            map.insert("scope".into(), scope.clone().into());
        }
        Value::Object(map)
    }
}

/// Why [`verify`] refused a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the token's algorithm is not EdDSA")]
    Algorithm,
    #[error("the token's key id is not in the key set")]
    UnknownKey,
    #[error("the signature is wrong")]
    Signature,
    #[error("the token is for another audience")]
    Audience,
    #[error("the token has expired")]
    Expired,
    #[error("the token was issued in the future")]
    IssuedInFuture,
}

/// What an upstream must check, in this order: size and shape, `alg` is `EdDSA` (never what the
/// token would like), `kid` names a key of the JWKS, the Ed25519 signature with that public key,
/// then the claims: `aud` is this audience, `now < exp`, `iat <= now + CLOCK_SKEW`. Returns the
/// claims. An upstream should also check `iss` and remember `jti` until `exp` to refuse replays.
pub fn verify(jwks: &Value, token: &str, audience: &str, now: u64) -> Result<Value, VerifyError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(VerifyError::Malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed("not three parts"));
    };
    let header = decode_object(header_b64).ok_or(VerifyError::Malformed("header"))?;
    if header.get("alg").and_then(Value::as_str) != Some(ALG) {
        return Err(VerifyError::Algorithm);
    }
    if header.contains_key("crit") {
        // RFC 7515 section 4.1.11: extensions we do not understand must be refused.
        return Err(VerifyError::Malformed("crit"));
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(VerifyError::UnknownKey)?;
    let public_key = find_key(jwks, kid).ok_or(VerifyError::UnknownKey)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| VerifyError::Malformed("signature"))?;
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| VerifyError::Signature)?;

    let claims = decode_object(payload_b64).ok_or(VerifyError::Malformed("payload"))?;
    if claims.get("aud").and_then(Value::as_str) != Some(audience) {
        return Err(VerifyError::Audience);
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(VerifyError::Malformed("exp"))?;
    if now >= exp {
        return Err(VerifyError::Expired);
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(VerifyError::Malformed("iat"))?;
    if iat > now.saturating_add(CLOCK_SKEW) {
        return Err(VerifyError::IssuedInFuture);
    }
    Ok(Value::Object(claims))
}

fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The raw Ed25519 public key of the JWK with this `kid`, if it is one usable for EdDSA.
fn find_key(jwks: &Value, kid: &str) -> Option<Vec<u8>> {
    let key = jwks
        .get("keys")?
        .as_array()?
        .iter()
        .find(|key| key.get("kid").and_then(Value::as_str) == Some(kid))?;
    let member = |name| key.get(name).and_then(Value::as_str);
    if member("kty") != Some("OKP") || member("crv") != Some("Ed25519") {
        return None;
    }
    if member("alg").is_some_and(|alg| alg != ALG) || member("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let x = URL_SAFE_NO_PAD.decode(member("x")?).ok()?;
    (x.len() == 32).then_some(x)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const NOW: u64 = 1_750_000_000;

    fn new_key() -> AssertionKey {
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        AssertionKey::from_pair(Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap())
    }

    fn claims() -> Claims {
        Claims::new(
            "u-42",
            "records",
            NOW,
            DEFAULT_TTL,
            NOW - 300,
            &[7; 32],
            [9; 16],
        )
    }

    fn b64(part: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(part)
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Replaces one of the three parts of `token`.
    fn with_part(token: &str, index: usize, part: &str) -> String {
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[index] = part;
        parts.join(".")
    }

    #[test]
    fn signed_token_verifies_through_the_jwks() {
        let key = new_key();
        let token = key.sign(&claims());
        let verified = verify(&key.jwks(), &token, "records", NOW).unwrap();
        assert_eq!(verified, serde_json::to_value(claims()).unwrap());
        assert_eq!(verified["sub"], "u-42");
        assert_eq!(verified["iss"], "wardgate");
        assert_eq!(verified["exp"], NOW + 60);
        assert_eq!(verified["auth_time"], NOW - 300);
        assert_eq!(verified["sid"], b64(&[7; 32]));
        assert_eq!(verified["jti"], b64(&[9; 16]));
        // Still valid one second before it expires.
        assert!(verify(&key.jwks(), &token, "records", NOW + 59).is_ok());
    }

    #[test]
    fn header_names_algorithm_type_and_key() {
        let key = new_key();
        let token = key.sign(&claims());
        let header = decode_object(token.split('.').next().unwrap()).unwrap();
        assert_eq!(
            Value::Object(header),
            json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid()})
        );
    }

    #[test]
    fn optional_claims_appear_only_when_asked_for() {
        let plain = serde_json::to_value(claims()).unwrap();
        assert!(plain.get("name").is_none() && plain.get("roles").is_none());
        for absent in ["purpose_of_use", "grants", "patient", "scope"] {
            assert!(plain.get(absent).is_none(), "{absent}");
        }
        let full = claims()
            .with_issuer("gw-eu")
            .with_name("Dr. Alice")
            .with_roles(vec!["clinician".into()]);
        let key = new_key();
        let verified = verify(&key.jwks(), &key.sign(&full), "records", NOW).unwrap();
        assert_eq!(verified["name"], "Dr. Alice");
        assert_eq!(verified["roles"], json!(["clinician"]));
        assert_eq!(verified["iss"], "gw-eu");
    }

    #[test]
    fn hand_built_json_matches_the_serde_derive() {
        let access = |grants: Vec<String>, scopes: Vec<String>| AccessClaims {
            purpose_of_use: "TREAT",
            grants,
            patient: "p1".into(),
            scopes,
        };
        let decided = claims().with_access(access(
            vec!["0a".repeat(16)],
            vec!["patient/Observation.rs?category=laboratory".into()],
        ));
        let plain = claims().with_access(access(Vec::new(), Vec::new()));
        assert_eq!((plain.grants.as_ref(), plain.scope.as_ref()), (None, None));
        for claims in [
            claims(),
            claims().with_name("A").with_roles(vec![]),
            decided,
            plain,
        ] {
            assert_eq!(claims.to_json(), serde_json::to_value(&claims).unwrap());
        }
    }

    #[test]
    fn jwks_publishes_the_public_key_only() {
        let key = new_key();
        let jwks = key.jwks();
        let jwk = &jwks["keys"][0];
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], key.kid());
        assert!(jwk.get("d").is_none());
        assert_eq!(jwk.as_object().unwrap().len(), 6);
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        // Debug names the key by its id and shows nothing of the pair.
        assert_eq!(
            format!("{key:?}"),
            format!("AssertionKey {{ kid: {:?}, .. }}", key.kid())
        );
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint_of_x() {
        let key = new_key();
        let x = key.jwks()["keys"][0]["x"].as_str().unwrap().to_owned();
        // Computed here from the published members, independently of `thumbprint`.
        let members = json!({"kty": "OKP", "x": x, "crv": "Ed25519"});
        let canonical = format!(
            "{{\"crv\":{},\"kty\":{},\"x\":{}}}",
            members["crv"], members["kty"], members["x"]
        );
        assert_eq!(key.kid(), b64(&Sha256::digest(canonical.as_bytes())));
    }

    /// RFC 8037 appendix A: the example key (A.1), its thumbprint (A.3) and a signature (A.4).
    /// Ed25519 is deterministic, so the signature must match byte for byte.
    #[test]
    fn rfc8037_test_vectors() {
        let seed = URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap();
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let public = URL_SAFE_NO_PAD.decode(x).unwrap();
        let key = AssertionKey::from_pair(
            Ed25519KeyPair::from_seed_and_public_key(&seed, &public).unwrap(),
        );
        assert_eq!(key.x, x);
        assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        assert_eq!(
            key.jws(br#"{"alg":"EdDSA"}"#, b"Example of Ed25519 signing"),
            "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-\
             09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
        );
    }

    #[test]
    fn tampered_payload_is_refused() {
        let key = new_key();
        let token = key.sign(&claims());
        let mut forged = serde_json::to_value(claims()).unwrap();
        forged["sub"] = "u-1".into();
        let token = with_part(&token, 1, &b64(forged.to_string().as_bytes()));
        assert_eq!(
            verify(&key.jwks(), &token, "records", NOW),
            Err(VerifyError::Signature)
        );
    }

    #[test]
    fn tampered_header_is_refused() {
        let key = new_key();
        let token = key.sign(&claims());
        let kid = key.kid();
        for alg in ["none", "HS256", "RS256", "eddsa"] {
            let header = json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string();
            let forged = with_part(&token, 0, &b64(header.as_bytes()));
            assert_eq!(
                verify(&key.jwks(), &forged, "records", NOW),
                Err(VerifyError::Algorithm),
                "{alg}"
            );
        }
        // alg "none" with the signature dropped.
        let header = b64(json!({"alg": "none"}).to_string().as_bytes());
        let forged = with_part(&with_part(&token, 0, &header), 2, "");
        assert_eq!(
            verify(&key.jwks(), &forged, "records", NOW),
            Err(VerifyError::Algorithm)
        );
        // Right algorithm, but any other change to the signed header breaks the signature.
        let header = json!({"alg": "EdDSA", "typ": "JOSE", "kid": kid}).to_string();
        let forged = with_part(&token, 0, &b64(header.as_bytes()));
        assert_eq!(
            verify(&key.jwks(), &forged, "records", NOW),
            Err(VerifyError::Signature)
        );
        let header = json!({"alg": "EdDSA", "kid": kid, "crit": ["exp"]}).to_string();
        let forged = with_part(&token, 0, &b64(header.as_bytes()));
        assert_eq!(
            verify(&key.jwks(), &forged, "records", NOW),
            Err(VerifyError::Malformed("crit"))
        );
    }

    #[test]
    fn tampered_signature_is_refused() {
        let key = new_key();
        let token = key.sign(&claims());
        let mut signature = URL_SAFE_NO_PAD
            .decode(token.split('.').nth(2).unwrap())
            .unwrap();
        signature[10] ^= 1;
        let forged = with_part(&token, 2, &b64(&signature));
        assert_eq!(
            verify(&key.jwks(), &forged, "records", NOW),
            Err(VerifyError::Signature)
        );
        let short = with_part(&token, 2, &b64(&signature[..63]));
        assert_eq!(
            verify(&key.jwks(), &short, "records", NOW),
            Err(VerifyError::Signature)
        );
        let padded = format!("{token}==");
        assert_eq!(
            verify(&key.jwks(), &padded, "records", NOW),
            Err(VerifyError::Malformed("signature"))
        );
    }

    #[test]
    fn wrong_audience_is_refused() {
        let key = new_key();
        let token = key.sign(&claims());
        assert_eq!(
            verify(&key.jwks(), &token, "billing", NOW),
            Err(VerifyError::Audience)
        );
        assert_eq!(
            verify(&key.jwks(), &token, "Records", NOW),
            Err(VerifyError::Audience)
        );
    }

    #[test]
    fn expired_and_future_tokens_are_refused() {
        let key = new_key();
        let token = key.sign(&claims());
        assert_eq!(
            verify(&key.jwks(), &token, "records", NOW + 60),
            Err(VerifyError::Expired)
        );
        assert_eq!(
            verify(&key.jwks(), &token, "records", NOW + 3600),
            Err(VerifyError::Expired)
        );
        // The upstream's clock runs behind by up to the skew: accepted; beyond it: refused.
        assert!(verify(&key.jwks(), &token, "records", NOW - CLOCK_SKEW).is_ok());
        assert_eq!(
            verify(&key.jwks(), &token, "records", NOW - CLOCK_SKEW - 1),
            Err(VerifyError::IssuedInFuture)
        );
    }

    #[test]
    fn unknown_or_wrong_key_is_refused() {
        let key = new_key();
        let other = new_key();
        let token = other.sign(&claims());
        // kid not in the set.
        assert_eq!(
            verify(&key.jwks(), &token, "records", NOW),
            Err(VerifyError::UnknownKey)
        );
        // Signed by another key, but claiming the published kid.
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid()}).to_string();
        let header = b64(header.as_bytes());
        let payload = token.split('.').nth(1).unwrap();
        let signing_input = format!("{header}.{payload}");
        let signature = other.pair.sign(signing_input.as_bytes());
        let forged = format!("{signing_input}.{}", b64(signature.as_ref()));
        assert_eq!(
            verify(&key.jwks(), &forged, "records", NOW),
            Err(VerifyError::Signature)
        );
        // No kid at all.
        let header = b64(json!({"alg": "EdDSA"}).to_string().as_bytes());
        let no_kid = with_part(&token, 0, &header);
        assert_eq!(
            verify(&key.jwks(), &no_kid, "records", NOW),
            Err(VerifyError::UnknownKey)
        );
        // A JWK with the right kid but of another kind is not used.
        for (member, value) in [("alg", "HS256"), ("kty", "EC"), ("crv", "X25519")] {
            let mut jwks = other.jwks();
            jwks["keys"][0][member] = value.into();
            assert_eq!(
                verify(&jwks, &token, "records", NOW),
                Err(VerifyError::UnknownKey),
                "{member}: {value}"
            );
        }
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let key = new_key();
        let token = key.sign(&claims());
        let jwks = key.jwks();
        for bad in ["", "a.b", "a.b.c.d", &format!("{token}.x"), "!!.!!.!!"] {
            assert!(matches!(
                verify(&jwks, bad, "records", NOW),
                Err(VerifyError::Malformed(_))
            ));
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            verify(&jwks, &long, "records", NOW),
            Err(VerifyError::Malformed("too long"))
        );
        // The bound is 8 KiB, and a token of exactly that length passes: a long display name
        // (and header padding to land on the byte) is no reason to refuse.
        let exact = (0..3)
            .flat_map(|pad| (5000..6200).map(move |name| (pad, name)))
            .map(|(pad, name)| {
                let header = json!({"alg": ALG, "kid": key.kid(), "pad": "p".repeat(pad)});
                let payload = claims().with_name("n".repeat(name)).to_json();
                key.jws(
                    header.to_string().as_bytes(),
                    payload.to_string().as_bytes(),
                )
            })
            .find(|token| token.len() == 8192)
            .unwrap();
        assert!(verify(&jwks, &exact, "records", NOW).is_ok());
    }

    #[test]
    fn key_file_is_created_private_and_reloads_with_the_same_kid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/keys").join(KEY_FILE);
        let (created, fresh) = AssertionKey::load_or_create(&path).unwrap();
        assert!(fresh);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("data/keys")), 0o700);
        assert_eq!(mode(&dir.path().join("data")), 0o700);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
        assert!(text.ends_with("-----END PRIVATE KEY-----\n"), "{text}");
        // No temporary file left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );

        let (loaded, fresh) = AssertionKey::load_or_create(&path).unwrap();
        assert!(!fresh);
        assert_eq!(loaded.kid(), created.kid());
        // The reloaded key signs tokens the first key's JWKS accepts.
        assert!(verify(&created.jwks(), &loaded.sign(&claims()), "records", NOW).is_ok());
    }

    #[test]
    fn gateways_starting_together_end_up_with_one_key() {
        // Each round, eight starts race to create the same missing key file: the losers find
        // the winner's key in place when they link theirs, and load it.
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(KEY_FILE);
            let start = std::sync::Barrier::new(8);
            let keys: Vec<_> = std::thread::scope(|scope| {
                let starts: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            AssertionKey::load_or_create(&path)
                        })
                    })
                    .collect();
                starts.into_iter().map(|s| s.join().unwrap()).collect()
            });
            let keys: Vec<_> = keys.into_iter().map(Result::unwrap).collect();
            assert_eq!(keys.iter().filter(|(_, created)| *created).count(), 1);
            assert!(keys.iter().all(|(key, _)| key.kid() == keys[0].0.kid()));
        }
    }

    #[test]
    fn a_key_that_cannot_be_created_says_why() {
        // The name fits the file system's limit of 255 bytes, but its temporary file's does not:
        // the error is the creation's, not the "not found" of the load before it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k".repeat(250));
        let Err(AssertionKeyError::Io { source, .. }) = AssertionKey::load_or_create(&path) else {
            panic!("created a key with a 250-byte name");
        };
        assert_eq!(source.kind(), std::io::ErrorKind::InvalidFilename);
    }

    #[test]
    fn key_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        AssertionKey::load_or_create(&path).unwrap();
        for loose in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
            let error = AssertionKey::load_or_create(&path).unwrap_err();
            assert!(
                matches!(&error, AssertionKeyError::Permissions { mode, .. } if *mode == loose),
                "{error:?}"
            );
            assert!(error.to_string().contains("chmod 600"), "{error}");
        }
        // Owner-only but read-only is fine.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(AssertionKey::load_or_create(&path).is_ok());
    }

    #[test]
    fn corrupt_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let pem = |body: &[u8]| encode_pem(body);
        let v2 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let mut truncated = pem(v2.as_ref());
        truncated.truncate(truncated.len() - 30);
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"garbage".to_vec(),
            vec![0xff, 0xfe, 0x00],
            pem(b"not a key").into_bytes(),
            pem(&v2.as_ref()[..v2.as_ref().len() - 1]).into_bytes(),
            truncated.into_bytes(),
            format!("{}trailing\n", pem(v2.as_ref())).into_bytes(),
            pem(v2.as_ref())
                .replace("PRIVATE KEY", "EC PRIVATE KEY")
                .into_bytes(),
            vec![b'A'; MAX_KEY_FILE as usize + 1],
        ];
        for contents in cases {
            std::fs::write(&path, &contents).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let error = AssertionKey::load_or_create(&path).unwrap_err();
            assert!(
                matches!(error, AssertionKeyError::Corrupt { .. }),
                "{:?}: {error:?}",
                String::from_utf8_lossy(&contents)
            );
            // Never silently replaced by a new key.
            assert_eq!(std::fs::read(&path).unwrap(), contents);
        }
    }

    #[test]
    fn openssl_style_pkcs8_v1_and_crlf_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let v1 = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).unwrap();
        let expected = AssertionKey::from_pair(Ed25519KeyPair::from_pkcs8(v1.as_ref()).unwrap());
        std::fs::write(&path, encode_pem(v1.as_ref()).replace('\n', "\r\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (loaded, fresh) = AssertionKey::load_or_create(&path).unwrap();
        assert!(!fresh);
        assert_eq!(loaded.kid(), expected.kid());
    }

    #[test]
    fn a_directory_in_place_of_the_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        let error = AssertionKey::load_or_create(&path).unwrap_err();
        assert!(
            matches!(error, AssertionKeyError::NotAFile { .. }),
            "{error:?}"
        );
    }
}
