//! Every way the gateway itself answers instead of the upstream, in one place: the registry of
//! stable codes.
//!
//! A refusal is a small fixed response: a status, a stable code that operators can search for
//! in the README and the logs, and a one-line reason. It never carries internal detail: no
//! upstream error text, no addresses, no file paths. Causes are logged; clients get the code.
//! The request path's refusals, the framing guard's (written on the raw connection below
//! hyper), the injection kinds and the admin API's errors are all rows of `Refusal::spec`;
//! [`Refusal::all`] lists every row, a test keeps the codes unique and another keeps the
//! README's table equal to this one.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request target is not an absolute path.
    BadTarget,
    /// No usable `Host` / `:authority`.
    BadHost,
    /// The URI is longer than `server.max_request_line` (HTTP/2; HTTP/1 is checked below hyper).
    UriTooLong,
    /// A method outside the route's (or the gateway's) allow list.
    MethodNotAllowed,
    /// `Host` / `:authority` is not one of `sanitize.server_names`.
    UnknownHost,
    /// Path rules (`sanitize::request`): broken percent-encoding, encoded separators, control
    /// characters, invalid UTF-8, dot-segments, double encoding.
    PathBadEncoding,
    PathEncodedSeparator,
    PathControlCharacter,
    PathInvalidUtf8,
    PathDotSegment,
    PathDoubleEncoding,
    /// A request header name with `_`: CGI-style back ends read it as the `-` name, so
    /// `X_Wardgate_User` would pass for `X-Wardgate-User` (`sanitize.allow_underscores_in_headers`).
    HeaderUnderscore,
    /// A header that must appear once (`Content-Type`, `Host`, `Authorization`...) repeated:
    /// the gateway and the back end could read different ones.
    HeaderRepeated,
    /// A method override (`X-HTTP-Method-Override`, `_method`) that is not a method name.
    MethodOverrideInvalid,
    /// Body over the route's limit (announced or counted while streaming).
    BodyTooLarge,
    /// `Content-Type` outside the route's allow list.
    UnsupportedMediaType,
    MalformedJson,
    JsonTooDeep,
    MalformedForm,
    /// A JSON object names the same key twice: parsers disagree on which value counts.
    JsonDuplicateKey,
    /// A `multipart/form-data` body without a usable boundary, or parts that do not parse.
    MalformedMultipart,
    /// The client stopped sending its body for longer than `server.body_idle_timeout`.
    BodyTimeout,
    /// An HTTP/1 framing rule broken below hyper (`sanitize::framing`); the connection closes.
    Framing(Violation),
    /// A query, form or JSON value carries an injection attack (`sanitize::injection`).
    Injection(Attack),
    /// A rate limit has no capacity left for this client, user or route.
    RateLimited,
    /// A rate limit holds as many keys as it may: new clients wait until idle ones are evicted.
    RateLimitFull,
    /// The client already has `server.max_upstream_requests_per_client` requests in flight.
    TooManyInFlight,
    /// No route matches the host and normalized path.
    NoRoute,
    /// The upstream refused or reset the connection, or could not be resolved.
    UpstreamUnavailable,
    /// The upstream did not connect or answer in time.
    UpstreamTimeout,
    /// The upstream answered with something that is not HTTP.
    UpstreamProtocol,
    /// Plain HTTP request for something other than a redirect, or a redirect without a host.
    HttpsRequired,
    /// Admin listener: unknown path or method.
    AdminNotFound,
    /// An admin API call failed (`admin::users`).
    Admin(AdminError),
    /// Enrollment: the token is unknown, used or expired (alike on purpose).
    EnrollmentLinkInvalid,
    /// Enrollment: the password fails the policy; the answer lists every failed rule.
    PasswordRefused,
    /// Password hashing has no capacity left (`PoolError::Busy`): retry in a second.
    HashingBusy,
    /// Enrollment: the ceremony id is unknown, expired, or dropped after too many wrong codes.
    EnrollmentUnknown,
    /// Enrollment: the authenticator code is wrong or not a code.
    TotpCodeWrong,
    /// Nothing is served at this path under the gateway's own `/.wardgate/` prefix.
    GatewayPathNotFound,
    /// A body for the gateway's own API is not the JSON it expects.
    MalformedApiRequest,
    /// The identity store or the hashing threads failed (logged).
    AuthUnavailable,
    /// Unknown user, wrong password, locked or disabled account: deliberately one answer.
    LoginFailed,
    /// The login challenge is unknown, expired, used up or for another step.
    LoginChallengeInvalid,
    /// A wrong, malformed or replayed second factor (or a locked one: the same answer).
    SecondFactorWrong,
    /// The account has no usable second factor yet: it must be enrolled first.
    EnrollmentRequired,
    /// A passkey or security key could not be registered (refused attestation, unknown or
    /// expired WebAuthn ceremony, a method the account's roles do not allow).
    FactorNotRegistered,
    /// A protected route and no live session.
    SessionMissing,
    SessionIdle,
    SessionAbsolute,
    /// The route wants a fresher second-factor proof.
    StepUpRequired,
    /// A form post failed the CSRF checks (`auth::csrf`): token, `Origin` or fetch metadata.
    FormNotVerified,
    /// Access policy (`policy`): not on the patient's care team for this data (or it is
    /// sensitive, or the role only gets it on request) and no grant covers it.
    PolicyNeedsGrant,
    /// No role of the person ever gives this category.
    PolicyNeverAllowed,
    /// The person holds an operator role: never patient data.
    PolicyOperator,
    /// A patient route whose request names no valid patient id.
    PolicyNoPatient,
    /// The care-team links or grants could not be read: nothing passes.
    PolicyUnavailable,
    /// The audit trail cannot take a patient-data request's decision: nothing is forwarded.
    AuditUnavailable,
    /// A store outside the process (Redis, PostgreSQL) did not answer: nothing passes.
    StateUnavailable,
    /// FHIR routes (`policy::fhir`): not a read, search or history the gateway can check.
    FhirUnsupported,
    /// A FHIR search that names no patient, or several.
    FhirNoPatient,
    /// A FHIR search without `category` that could return a category the person may not see.
    FhirNeedsCategory,
    /// `_include`, `_revinclude`, `_has`, chaining and the like: they reach other resources.
    FhirReaches,
    /// A resource type or category code `policy.fhir` does not name (default deny).
    FhirUnmapped,
    /// A `_format` other than JSON: the gateway checks FHIR JSON answers only.
    FhirFormat,
    /// A read whose resource the person may not see (whose it is stays unsaid).
    FhirNotShown,
    /// The upstream's answer could not be checked (not FHIR JSON, encoded, too large).
    FhirAnswerUnchecked,
    /// Access requests (`policy::grants`).
    GrantUnknown,
    GrantOwnRequest,
    GrantNotApprover,
    GrantNotPending,
    GrantApprovedAlready,
    GrantRequestInvalid,
    GrantNotRevocable,
    /// Break-glass (`policy.break_glass`).
    BreakGlassNotAllowed,
    ReviewNotReviewer,
    ReviewNotReviewable,
}

impl Refusal {
    /// Status, stable code and one-line reason, in one table.
    fn spec(self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            Refusal::BadTarget => (
                S::BAD_REQUEST,
                "WG-REQ-001",
                "the request path is malformed",
            ),
            Refusal::BadHost => (
                S::BAD_REQUEST,
                "WG-REQ-002",
                "the request has no valid host",
            ),
            Refusal::HttpsRequired => (S::BAD_REQUEST, "WG-REQ-003", "use https"),
            Refusal::UriTooLong => (S::URI_TOO_LONG, "WG-REQ-004", "the request URI is too long"),
            Refusal::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "WG-METHOD-001",
                "this method is not allowed here",
            ),
            Refusal::UnknownHost => (
                S::BAD_REQUEST,
                "WG-HOST-001",
                "this host is not served here",
            ),
            Refusal::PathBadEncoding => (
                S::BAD_REQUEST,
                "WG-PATH-001",
                "the path has broken percent-encoding",
            ),
            Refusal::PathEncodedSeparator => (
                S::BAD_REQUEST,
                "WG-PATH-002",
                "the path has an encoded or backslash separator",
            ),
            Refusal::PathControlCharacter => (
                S::BAD_REQUEST,
                "WG-PATH-003",
                "the path has a control character",
            ),
            Refusal::PathInvalidUtf8 => {
                (S::BAD_REQUEST, "WG-PATH-004", "the path is not valid UTF-8")
            }
            Refusal::PathDotSegment => (S::BAD_REQUEST, "WG-PATH-005", "the path has dot-segments"),
            Refusal::PathDoubleEncoding => {
                (S::BAD_REQUEST, "WG-PATH-006", "the path is encoded twice")
            }
            Refusal::HeaderUnderscore => (
                S::BAD_REQUEST,
                "WG-HDR-001",
                "a request header name contains an underscore",
            ),
            Refusal::HeaderRepeated => (
                S::BAD_REQUEST,
                "WG-HDR-002",
                "a request header that must appear once is repeated",
            ),
            Refusal::MethodOverrideInvalid => (
                S::BAD_REQUEST,
                "WG-METHOD-002",
                "the method override is not a method name",
            ),
            Refusal::BodyTooLarge => (
                S::PAYLOAD_TOO_LARGE,
                "WG-BODY-001",
                "the request body is too large",
            ),
            Refusal::UnsupportedMediaType => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "WG-BODY-002",
                "this content type is not accepted here",
            ),
            Refusal::MalformedJson => (S::BAD_REQUEST, "WG-BODY-003", "the JSON body is malformed"),
            Refusal::JsonTooDeep => (
                S::BAD_REQUEST,
                "WG-BODY-004",
                "the JSON body is nested too deeply",
            ),
            Refusal::MalformedForm => (S::BAD_REQUEST, "WG-BODY-005", "the form body is malformed"),
            Refusal::JsonDuplicateKey => (
                S::BAD_REQUEST,
                "WG-BODY-007",
                "the JSON body repeats a key in an object",
            ),
            Refusal::MalformedMultipart => (
                S::BAD_REQUEST,
                "WG-BODY-008",
                "the multipart body is malformed",
            ),
            Refusal::BodyTimeout => (
                S::REQUEST_TIMEOUT,
                "WG-BODY-006",
                "the request body stopped arriving",
            ),
            Refusal::Framing(violation) => framing(violation),
            Refusal::Injection(attack) => injection(attack),
            Refusal::Admin(error) => admin(error),
            Refusal::RateLimited => (
                S::TOO_MANY_REQUESTS,
                "WG-RATE-001",
                "too many requests: retry later",
            ),
            Refusal::RateLimitFull => (
                S::TOO_MANY_REQUESTS,
                "WG-RATE-002",
                "the gateway is busy: retry later",
            ),
            Refusal::TooManyInFlight => (
                S::TOO_MANY_REQUESTS,
                "WG-RATE-003",
                "too many requests in flight from this client: retry later",
            ),
            Refusal::NoRoute => (S::NOT_FOUND, "WG-ROUTE-001", "no such resource"),
            Refusal::UpstreamUnavailable => (
                S::BAD_GATEWAY,
                "WG-UP-001",
                "the service behind the gateway is unavailable",
            ),
            Refusal::UpstreamTimeout => (
                S::GATEWAY_TIMEOUT,
                "WG-UP-002",
                "the service behind the gateway did not answer in time",
            ),
            Refusal::UpstreamProtocol => (
                S::BAD_GATEWAY,
                "WG-UP-003",
                "the service behind the gateway sent an invalid answer",
            ),
            Refusal::AdminNotFound => (S::NOT_FOUND, "WG-ADMIN-001", "no such admin resource"),
            Refusal::EnrollmentLinkInvalid => (
                S::BAD_REQUEST,
                "WG-AUTH-001",
                "this enrollment link is invalid or has expired",
            ),
            Refusal::PasswordRefused => (
                S::BAD_REQUEST,
                "WG-AUTH-002",
                "this password is not accepted",
            ),
            Refusal::HashingBusy => (
                S::SERVICE_UNAVAILABLE,
                "WG-AUTH-003",
                "the gateway is busy: retry in a second",
            ),
            Refusal::EnrollmentUnknown => (
                S::BAD_REQUEST,
                "WG-AUTH-004",
                "this enrollment is unknown or has expired: start again from the link",
            ),
            Refusal::TotpCodeWrong => (
                S::BAD_REQUEST,
                "WG-AUTH-005",
                "the code from the authenticator app is wrong",
            ),
            Refusal::GatewayPathNotFound => (S::NOT_FOUND, "WG-AUTH-006", "no such resource"),
            Refusal::MalformedApiRequest => (
                S::BAD_REQUEST,
                "WG-AUTH-007",
                "the request body is not the JSON this call expects",
            ),
            Refusal::AuthUnavailable => (
                S::INTERNAL_SERVER_ERROR,
                "WG-AUTH-008",
                "login is unavailable; see the gateway's log",
            ),
            Refusal::LoginFailed => (
                S::UNAUTHORIZED,
                "WG-AUTH-009",
                "the user name or password is wrong, or the account cannot log in now",
            ),
            Refusal::LoginChallengeInvalid => (
                S::UNAUTHORIZED,
                "WG-AUTH-010",
                "this login has expired or is unknown: start again",
            ),
            Refusal::SecondFactorWrong => (
                S::UNAUTHORIZED,
                "WG-AUTH-011",
                "the second factor was not accepted",
            ),
            Refusal::EnrollmentRequired => (
                S::FORBIDDEN,
                "WG-AUTH-012",
                "a second factor must be set up first: use the enrollment link from your administrator",
            ),
            Refusal::FactorNotRegistered => (
                S::BAD_REQUEST,
                "WG-AUTH-013",
                "this second factor could not be set up: try again or choose another",
            ),
            Refusal::SessionMissing => (S::UNAUTHORIZED, "WG-SESSION-001", "log in to continue"),
            Refusal::SessionIdle => (
                S::UNAUTHORIZED,
                "WG-SESSION-002",
                "the session ended after a time without activity: log in again",
            ),
            Refusal::SessionAbsolute => (
                S::UNAUTHORIZED,
                "WG-SESSION-003",
                "the session reached its maximum length: log in again",
            ),
            Refusal::StepUpRequired => (
                S::UNAUTHORIZED,
                "WG-SESSION-004",
                "confirm it is you with your second factor to continue",
            ),
            Refusal::FormNotVerified => (
                S::FORBIDDEN,
                "WG-AUTH-020",
                "the form could not be verified; reload the page and try again",
            ),
            Refusal::PolicyNeedsGrant => (
                S::FORBIDDEN,
                "WG-POLICY-001",
                "you may see this only with an access grant for this patient: ask for access",
            ),
            Refusal::PolicyNeverAllowed => (
                S::FORBIDDEN,
                "WG-POLICY-002",
                "your roles never give access to this kind of data",
            ),
            Refusal::PolicyOperator => (
                S::FORBIDDEN,
                "WG-POLICY-003",
                "operator accounts never see patient data",
            ),
            Refusal::PolicyNoPatient => (
                S::BAD_REQUEST,
                "WG-POLICY-004",
                "this route needs one valid patient id in the request",
            ),
            Refusal::PolicyUnavailable => (
                S::SERVICE_UNAVAILABLE,
                "WG-POLICY-005",
                "access cannot be checked right now: try again shortly",
            ),
            Refusal::AuditUnavailable => (
                S::SERVICE_UNAVAILABLE,
                "WG-AUDIT-001",
                "this request cannot be recorded right now: try again shortly",
            ),
            Refusal::StateUnavailable => (
                S::SERVICE_UNAVAILABLE,
                "WG-STORE-001",
                "the gateway cannot reach its state store right now: try again shortly",
            ),
            Refusal::FhirUnsupported => (
                S::BAD_REQUEST,
                "WG-FHIR-001",
                "only FHIR reads, searches and histories of one patient's data pass here",
            ),
            Refusal::FhirNoPatient => (
                S::FORBIDDEN,
                "WG-FHIR-002",
                "a search must name one patient: add patient= (or subject=Patient/…)",
            ),
            Refusal::FhirNeedsCategory => (
                S::FORBIDDEN,
                "WG-FHIR-003",
                "this search could return data you may not see: add category=",
            ),
            Refusal::FhirReaches => (
                S::FORBIDDEN,
                "WG-FHIR-004",
                "_include, _revinclude, _has and chained parameters are not allowed here",
            ),
            Refusal::FhirUnmapped => (
                S::FORBIDDEN,
                "WG-FHIR-005",
                "this kind of FHIR data is not in the access policy",
            ),
            Refusal::FhirFormat => (
                S::NOT_ACCEPTABLE,
                "WG-FHIR-006",
                "only FHIR JSON passes here: drop _format or use _format=json",
            ),
            Refusal::FhirNotShown => (
                S::FORBIDDEN,
                "WG-FHIR-007",
                "the access policy does not allow you to see this resource",
            ),
            Refusal::FhirAnswerUnchecked => (
                S::BAD_GATEWAY,
                "WG-FHIR-008",
                "the upstream's answer could not be checked",
            ),
            Refusal::GrantUnknown => (S::NOT_FOUND, "WG-GRANT-001", "no such access request"),
            Refusal::GrantOwnRequest => (
                S::FORBIDDEN,
                "WG-GRANT-002",
                "nobody approves or denies their own access request",
            ),
            Refusal::GrantNotApprover => (
                S::FORBIDDEN,
                "WG-GRANT-003",
                "only an approver may decide access requests",
            ),
            Refusal::GrantNotPending => (
                S::CONFLICT,
                "WG-GRANT-004",
                "this access request is no longer pending",
            ),
            Refusal::GrantApprovedAlready => (
                S::CONFLICT,
                "WG-GRANT-005",
                "you approved this access request already",
            ),
            Refusal::GrantRequestInvalid => (
                S::BAD_REQUEST,
                "WG-GRANT-006",
                "an access request names a patient, categories your roles may request, a reason and a duration within the maximum",
            ),
            Refusal::GrantNotRevocable => (
                S::CONFLICT,
                "WG-GRANT-007",
                "this grant is neither pending nor active",
            ),
            Refusal::BreakGlassNotAllowed => (
                S::FORBIDDEN,
                "WG-GRANT-008",
                "your roles may not open emergency access",
            ),
            Refusal::ReviewNotReviewer => (
                S::FORBIDDEN,
                "WG-GRANT-009",
                "only a reviewer may review emergency access",
            ),
            Refusal::ReviewNotReviewable => (
                S::CONFLICT,
                "WG-GRANT-010",
                "this is not an emergency access waiting for review",
            ),
        }
    }

    /// Every refusal, each once: the registry's rows.
    pub fn all() -> Vec<Refusal> {
        let plain = [
            Refusal::BadTarget,
            Refusal::BadHost,
            Refusal::UriTooLong,
            Refusal::MethodNotAllowed,
            Refusal::UnknownHost,
            Refusal::PathBadEncoding,
            Refusal::PathEncodedSeparator,
            Refusal::PathControlCharacter,
            Refusal::PathInvalidUtf8,
            Refusal::PathDotSegment,
            Refusal::PathDoubleEncoding,
            Refusal::HeaderUnderscore,
            Refusal::HeaderRepeated,
            Refusal::MethodOverrideInvalid,
            Refusal::BodyTooLarge,
            Refusal::UnsupportedMediaType,
            Refusal::MalformedJson,
            Refusal::JsonTooDeep,
            Refusal::MalformedForm,
            Refusal::JsonDuplicateKey,
            Refusal::MalformedMultipart,
            Refusal::BodyTimeout,
            Refusal::RateLimited,
            Refusal::RateLimitFull,
            Refusal::TooManyInFlight,
            Refusal::NoRoute,
            Refusal::UpstreamUnavailable,
            Refusal::UpstreamTimeout,
            Refusal::UpstreamProtocol,
            Refusal::HttpsRequired,
            Refusal::AdminNotFound,
            Refusal::EnrollmentLinkInvalid,
            Refusal::PasswordRefused,
            Refusal::HashingBusy,
            Refusal::EnrollmentUnknown,
            Refusal::TotpCodeWrong,
            Refusal::GatewayPathNotFound,
            Refusal::MalformedApiRequest,
            Refusal::AuthUnavailable,
            Refusal::LoginFailed,
            Refusal::LoginChallengeInvalid,
            Refusal::SecondFactorWrong,
            Refusal::EnrollmentRequired,
            Refusal::FactorNotRegistered,
            Refusal::SessionMissing,
            Refusal::SessionIdle,
            Refusal::SessionAbsolute,
            Refusal::StepUpRequired,
            Refusal::FormNotVerified,
            Refusal::PolicyNeedsGrant,
            Refusal::PolicyNeverAllowed,
            Refusal::PolicyOperator,
            Refusal::PolicyNoPatient,
            Refusal::PolicyUnavailable,
            Refusal::AuditUnavailable,
            Refusal::StateUnavailable,
            Refusal::FhirUnsupported,
            Refusal::FhirNoPatient,
            Refusal::FhirNeedsCategory,
            Refusal::FhirReaches,
            Refusal::FhirUnmapped,
            Refusal::FhirFormat,
            Refusal::FhirNotShown,
            Refusal::FhirAnswerUnchecked,
            Refusal::GrantUnknown,
            Refusal::GrantOwnRequest,
            Refusal::GrantNotApprover,
            Refusal::GrantNotPending,
            Refusal::GrantApprovedAlready,
            Refusal::GrantRequestInvalid,
            Refusal::GrantNotRevocable,
            Refusal::BreakGlassNotAllowed,
            Refusal::ReviewNotReviewer,
            Refusal::ReviewNotReviewable,
        ];
        plain
            .into_iter()
            .chain(Violation::ALL.map(Refusal::Framing))
            .chain(Attack::ALL.map(Refusal::Injection))
            .chain(AdminError::ALL.map(Refusal::Admin))
            .collect()
    }

    /// The request itself is malformed (400, 408, 413, 414, 431): on HTTP/1 the connection
    /// closes after the answer, as nothing after it can be read with certainty.
    pub fn is_malformed_request(self) -> bool {
        matches!(
            self.status(),
            StatusCode::BAD_REQUEST
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::URI_TOO_LONG
                | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        )
    }

    pub fn status(self) -> StatusCode {
        self.spec().0
    }

    pub fn code(self) -> &'static str {
        self.spec().1
    }

    pub fn reason(self) -> &'static str {
        self.spec().2
    }

    /// The fixed JSON body: `{"error":"WG-…","message":"…"}`.
    pub fn body(self) -> Bytes {
        json_body(self.code(), self.reason())
    }

    /// A complete response (status, body, content type) for `body`'s type.
    pub fn response<B: From<Bytes>>(self) -> http::Response<B> {
        let mut response = http::Response::new(B::from(self.body()));
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// A framing rule broken by the client; each has a stable code, a status and a one-line reason.
///
/// Statuses: 414 for an over-long request line, 431 for too many or too large header fields,
/// 501 for a transfer coding other than `chunked` (RFC 9112 section 6.1), 400 for the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// An LF not preceded by CR.
    BareLineFeed,
    /// A CR not followed by LF.
    BareCarriageReturn,
    /// An empty line where the request line should be.
    EmptyLineBeforeRequest,
    /// Method not a token, or not exactly one SP between the three parts.
    MalformedRequestLine,
    /// A request target byte outside printable ASCII (CTL, NUL, DEL, >= 0x80).
    BadRequestTarget,
    /// A version other than `HTTP/1.1` or `HTTP/1.0`.
    UnsupportedVersion,
    /// The request line is longer than `max_request_line`.
    RequestLineTooLong,
    /// A field line that starts with SP or HTAB (obs-fold).
    ObsFold,
    /// A field line without a colon, or whose name is not a token (whitespace before the colon).
    MalformedField,
    /// A field value with a NUL or other control character.
    BadFieldValue,
    /// The head (or trailer section) is larger than `max_header_bytes`.
    HeadTooLarge,
    /// More header (or trailer) fields than `max_headers`.
    TooManyFields,
    /// A `Content-Length` that is not 1 to 18 decimal digits.
    BadContentLength,
    /// `Content-Length` more than once, even with equal values.
    DuplicateContentLength,
    /// A `Transfer-Encoding` other than exactly `chunked`.
    UnsupportedTransferEncoding,
    /// `Transfer-Encoding` more than once.
    DuplicateTransferEncoding,
    /// `Transfer-Encoding` on an HTTP/1.0 request.
    TransferEncodingInHttp10,
    /// Both `Content-Length` and `Transfer-Encoding`.
    ContentLengthWithTransferEncoding,
    /// A chunk size that is not 1 to 16 hexadecimal digits.
    BadChunkSize,
    /// A chunk extension that is not `;name[=value]` without whitespace.
    BadChunkExtension,
    /// A chunk-size line longer than the guard keeps.
    ChunkLineTooLong,
    /// Chunk data not followed by exactly CRLF.
    MissingChunkTerminator,
    /// `Content-Length` or `Transfer-Encoding` among the trailer fields.
    FramingFieldInTrailer,
}

impl Violation {
    /// Every violation, in code order.
    pub const ALL: [Violation; 23] = [
        Violation::BareLineFeed,
        Violation::BareCarriageReturn,
        Violation::EmptyLineBeforeRequest,
        Violation::MalformedRequestLine,
        Violation::BadRequestTarget,
        Violation::UnsupportedVersion,
        Violation::RequestLineTooLong,
        Violation::ObsFold,
        Violation::MalformedField,
        Violation::BadFieldValue,
        Violation::HeadTooLarge,
        Violation::TooManyFields,
        Violation::BadContentLength,
        Violation::DuplicateContentLength,
        Violation::UnsupportedTransferEncoding,
        Violation::DuplicateTransferEncoding,
        Violation::TransferEncodingInHttp10,
        Violation::ContentLengthWithTransferEncoding,
        Violation::BadChunkSize,
        Violation::BadChunkExtension,
        Violation::ChunkLineTooLong,
        Violation::MissingChunkTerminator,
        Violation::FramingFieldInTrailer,
    ];

    /// Its row in the registry of codes (`refusal.rs`).
    pub fn refusal(self) -> Refusal {
        Refusal::Framing(self)
    }
}

/// The kind of attack a value carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    SqlInjection,
    CrossSiteScripting,
    PathTraversal,
    CommandInjection,
}

impl Attack {
    /// Every attack, in code order.
    pub const ALL: [Attack; 4] = [
        Attack::SqlInjection,
        Attack::CrossSiteScripting,
        Attack::PathTraversal,
        Attack::CommandInjection,
    ];
}

/// Why an admin call failed; each has a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminError {
    BadRequest,
    Unauthorized,
    NoSuchUser,
    NameTaken,
    NoSuchSession,
    Store,
}

impl AdminError {
    /// Every admin error, in code order.
    pub const ALL: [AdminError; 6] = [
        AdminError::BadRequest,
        AdminError::Unauthorized,
        AdminError::NoSuchUser,
        AdminError::NameTaken,
        AdminError::Store,
        AdminError::NoSuchSession,
    ];

    /// Its row in the registry of codes (`refusal.rs`).
    pub fn refusal(self) -> Refusal {
        Refusal::Admin(self)
    }
}

/// The framing guard's rows: 414 for an over-long request line, 431 for too many or too large
/// header fields, 501 for a transfer coding other than `chunked` (RFC 9112 section 6.1), 400
/// for the rest. Each reason goes into a JSON string unescaped: no quotes, no backslash.
fn framing(violation: Violation) -> (StatusCode, &'static str, &'static str) {
    use StatusCode as S;
    match violation {
        Violation::BareLineFeed => (S::BAD_REQUEST, "WG-FRAME-001", "lines must end with CRLF"),
        Violation::BareCarriageReturn => (
            S::BAD_REQUEST,
            "WG-FRAME-002",
            "a CR must be followed by LF",
        ),
        Violation::EmptyLineBeforeRequest => (
            S::BAD_REQUEST,
            "WG-FRAME-003",
            "the request must not start with an empty line",
        ),
        Violation::MalformedRequestLine => (
            S::BAD_REQUEST,
            "WG-FRAME-004",
            "the request line must be method, target and version separated by single spaces",
        ),
        Violation::BadRequestTarget => (
            S::BAD_REQUEST,
            "WG-FRAME-005",
            "the request target must be printable ASCII; percent-encode other bytes",
        ),
        Violation::UnsupportedVersion => (
            S::BAD_REQUEST,
            "WG-FRAME-006",
            "only HTTP/1.1 and HTTP/1.0 are accepted",
        ),
        Violation::RequestLineTooLong => (
            S::URI_TOO_LONG,
            "WG-FRAME-007",
            "the request line is too long",
        ),
        Violation::ObsFold => (
            S::BAD_REQUEST,
            "WG-FRAME-008",
            "header fields must not be folded over several lines",
        ),
        Violation::MalformedField => (
            S::BAD_REQUEST,
            "WG-FRAME-009",
            "a header field must be a name, a colon and a value, with no space before the colon",
        ),
        Violation::BadFieldValue => (
            S::BAD_REQUEST,
            "WG-FRAME-010",
            "header values must not contain control characters",
        ),
        Violation::HeadTooLarge => (
            S::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "WG-FRAME-011",
            "the request header section is too large",
        ),
        Violation::TooManyFields => (
            S::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "WG-FRAME-012",
            "the request has too many header fields",
        ),
        Violation::BadContentLength => (
            S::BAD_REQUEST,
            "WG-FRAME-013",
            "Content-Length must be a plain decimal number without leading zeros",
        ),
        Violation::DuplicateContentLength => (
            S::BAD_REQUEST,
            "WG-FRAME-014",
            "Content-Length must appear only once",
        ),
        Violation::UnsupportedTransferEncoding => (
            S::NOT_IMPLEMENTED,
            "WG-FRAME-015",
            "only Transfer-Encoding: chunked is supported",
        ),
        Violation::DuplicateTransferEncoding => (
            S::BAD_REQUEST,
            "WG-FRAME-016",
            "Transfer-Encoding must appear only once",
        ),
        Violation::TransferEncodingInHttp10 => (
            S::BAD_REQUEST,
            "WG-FRAME-017",
            "HTTP/1.0 requests must not use Transfer-Encoding",
        ),
        Violation::ContentLengthWithTransferEncoding => (
            S::BAD_REQUEST,
            "WG-FRAME-018",
            "send Content-Length or Transfer-Encoding, not both",
        ),
        Violation::BadChunkSize => (
            S::BAD_REQUEST,
            "WG-FRAME-019",
            "a chunk size must be hexadecimal digits only",
        ),
        Violation::BadChunkExtension => (
            S::BAD_REQUEST,
            "WG-FRAME-020",
            "a chunk extension must be ;name or ;name=value without spaces",
        ),
        Violation::ChunkLineTooLong => (
            S::BAD_REQUEST,
            "WG-FRAME-021",
            "a chunk size line is too long",
        ),
        Violation::MissingChunkTerminator => (
            S::BAD_REQUEST,
            "WG-FRAME-022",
            "chunk data must be followed by CRLF",
        ),
        Violation::FramingFieldInTrailer => (
            S::BAD_REQUEST,
            "WG-FRAME-023",
            "trailer fields must not include Content-Length or Transfer-Encoding",
        ),
    }
}

fn injection(attack: Attack) -> (StatusCode, &'static str, &'static str) {
    use StatusCode as S;
    match attack {
        Attack::SqlInjection => (
            S::BAD_REQUEST,
            "WG-INJ-001",
            "a request value looks like SQL injection",
        ),
        Attack::CrossSiteScripting => (
            S::BAD_REQUEST,
            "WG-INJ-002",
            "a request value looks like cross-site scripting",
        ),
        Attack::PathTraversal => (
            S::BAD_REQUEST,
            "WG-INJ-003",
            "a request value looks like path traversal",
        ),
        Attack::CommandInjection => (
            S::BAD_REQUEST,
            "WG-INJ-004",
            "a request value looks like command injection",
        ),
    }
}

fn admin(error: AdminError) -> (StatusCode, &'static str, &'static str) {
    use StatusCode as S;
    match error {
        AdminError::BadRequest => (S::BAD_REQUEST, "WG-ADMIN-002", "the request is malformed"),
        AdminError::Unauthorized => (
            S::UNAUTHORIZED,
            "WG-ADMIN-003",
            "the admin token is missing or wrong",
        ),
        AdminError::NoSuchUser => (S::NOT_FOUND, "WG-ADMIN-004", "no such user"),
        AdminError::NameTaken => (S::CONFLICT, "WG-ADMIN-005", "this user name is taken"),
        AdminError::Store => (
            S::INTERNAL_SERVER_ERROR,
            "WG-ADMIN-006",
            "the identity store failed; see the gateway's log",
        ),
        AdminError::NoSuchSession => (S::NOT_FOUND, "WG-ADMIN-007", "no such session"),
    }
}

/// The refusal body for a code and a one-line reason (both fixed text of the gateway's own).
pub fn json_body(code: &str, reason: &str) -> Bytes {
    Bytes::from(format!(r#"{{"error":"{code}","message":"{reason}"}}"#))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_bodies_are_json() {
        let all = Refusal::all();
        let codes: std::collections::BTreeSet<_> = all.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), all.len(), "one code per refusal");
        for refusal in all {
            assert!(refusal.code().starts_with("WG-"), "{refusal:?}");
            let body: serde_json::Value = serde_json::from_slice(&refusal.body()).unwrap();
            assert_eq!(body["error"], refusal.code());
            assert_eq!(body["message"], refusal.reason());
        }
    }

    #[test]
    fn injection_codes_follow_their_kinds() {
        assert_eq!(
            Attack::ALL.map(|a| Refusal::Injection(a).code()),
            ["WG-INJ-001", "WG-INJ-002", "WG-INJ-003", "WG-INJ-004"]
        );
        for attack in Attack::ALL {
            let refusal = Refusal::Injection(attack);
            assert_eq!(refusal.status(), StatusCode::BAD_REQUEST);
            assert!(refusal.reason().starts_with("a request value looks like"));
        }
    }

    /// The README's table of codes (`| `WG-…` | status | meaning |`) is this registry: every
    /// code the gateway can answer with is documented, with its status, and nothing else is.
    #[test]
    fn the_readme_documents_exactly_these_codes() {
        let readme = include_str!("../README.md");
        let documented: std::collections::BTreeSet<(String, u16)> = readme
            .lines()
            .filter_map(|line| {
                let mut cells = line.strip_prefix("| `WG-")?.split('|');
                let code = cells.next()?.trim().strip_suffix('`')?;
                let status = cells.next()?.trim().parse().ok()?;
                Some((format!("WG-{code}"), status))
            })
            .collect();
        let registry: std::collections::BTreeSet<(String, u16)> = Refusal::all()
            .into_iter()
            .map(|r| (r.code().to_owned(), r.status().as_u16()))
            .collect();
        let undocumented: Vec<_> = registry.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&registry).collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "missing from the README: {undocumented:?}; in the README only: {unknown:?}"
        );
    }
}
