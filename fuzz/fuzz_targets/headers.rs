//! Header handling on arbitrary header maps: `proxy::strip_hop_by_hop`,
//! `proxy::strip_identity_headers`, the forwarding headers, `harden_response`, and the header
//! checks of `sanitize::request` (`check_head`, `media_type`, `check_host`).
//!
//! - After `strip_hop_by_hop`, no `Connection`, `Transfer-Encoding`, `Keep-Alive`, `TE`,
//!   `Trailer`, `Upgrade` or `proxy-*` header remains, nor any header the client named in
//!   `Connection` (with `keep_websocket`: exactly `Connection: upgrade`, `Upgrade: websocket`).
//! - After `strip_identity_headers`, no `x-wardgate-*`, `x-auth-request-*`, `x-forwarded-user`,
//!   `x-remote-user` or configured extra header remains.
//! - Neither touches any other header (same values, same order).
//! - Through the request path's sequence (hop-by-hop, identity, forwarding) an untrusted peer's
//!   forwarding headers are replaced by the gateway's, and no identity header survives.
//! - The header checks do not panic and keep their promises (announced length over the limit is
//!   refused, the media type is lower case without parameters).
//!
//! Input: one control byte (bit 0: keep_websocket, bit 1: has_body, bit 2: trusted peer,
//! bits 3-5: method), then lines `name: value`; a line `!name` adds `name` to the configured
//! extra identity headers.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http::Method;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use wardgate::config::{ByteSize, MethodName, RouteSanitize, Sanitize};
use wardgate::hardening;
use wardgate::proxy::{self, Peer, TrustedProxies};
use wardgate::refusal::Refusal;
use wardgate::sanitize::request::{self, BodyKind, BodyPlan, RouteRules};

const FIXED_HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

const METHODS: [Method; 8] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::TRACE,
    Method::CONNECT,
];

/// Written again here rather than taken from `proxy`: names compare as a CGI back end reads
/// them, lower case with `_` as `-`.
fn is_identity(name: &str, extra: &[String]) -> bool {
    let name = name.to_ascii_lowercase().replace('_', "-");
    name.starts_with("x-wardgate-")
        || name.starts_with("x-auth-request-")
        || [
            "x-forwarded-user",
            "x-forwarded-email",
            "x-forwarded-groups",
            "x-forwarded-preferred-username",
            "x-forwarded-access-token",
            "x-remote-user",
            "remote-user",
        ]
        .contains(&name.as_str())
        || extra.iter().any(|e| *e == name)
}

/// Every value of `name`, in order.
fn values(headers: &HeaderMap, name: &HeaderName) -> Vec<HeaderValue> {
    headers.get_all(name).iter().cloned().collect()
}

/// Headers not in `removed` are exactly as before.
fn untouched(before: &HeaderMap, after: &HeaderMap, removed: impl Fn(&str) -> bool, what: &str) {
    for name in before.keys() {
        if !removed(name.as_str()) {
            assert_eq!(
                values(before, name),
                values(after, name),
                "{what} changed {name}"
            );
        }
    }
    for name in after.keys() {
        assert!(
            before.contains_key(name) || removed(name.as_str()),
            "{what} added {name}"
        );
    }
}

fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn check_hop_by_hop(before: &HeaderMap, keep_websocket: bool) -> HeaderMap {
    let mut after = before.clone();
    proxy::strip_hop_by_hop(&mut after, keep_websocket);
    let named = connection_tokens(before);
    let hop = |name: &str| {
        FIXED_HOP_BY_HOP.contains(&name)
            || name.starts_with("proxy-")
            || named.iter().any(|t| t == name)
    };
    for name in after.keys() {
        let name = name.as_str();
        let kept = keep_websocket && (name == "connection" || name == "upgrade");
        assert!(kept || !hop(name), "hop-by-hop {name} survived");
    }
    if keep_websocket {
        assert_eq!(values(&after, &header::CONNECTION), ["upgrade"]);
        assert_eq!(values(&after, &header::UPGRADE), ["websocket"]);
        assert!(proxy::is_websocket_upgrade(&after));
    } else {
        assert!(!after.contains_key(header::CONNECTION));
        assert!(!after.contains_key(header::TRANSFER_ENCODING));
        assert!(!proxy::is_websocket_upgrade(&after));
    }
    untouched(before, &after, hop, "strip_hop_by_hop");
    after
}

fn check_identity(before: &HeaderMap, extra: &[String]) -> HeaderMap {
    let mut after = before.clone();
    proxy::strip_identity_headers(&mut after, extra);
    for name in after.keys() {
        assert!(
            !is_identity(name.as_str(), extra),
            "identity header {name} survived"
        );
    }
    untouched(
        before,
        &after,
        |n| is_identity(n, extra),
        "strip_identity_headers",
    );
    after
}

fn check_forwarding(headers: &HeaderMap, trusted: bool, extra: &[String]) {
    let peer_ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    let nets = if trusted {
        vec!["192.0.2.0/24".parse().expect("net")]
    } else {
        Vec::new()
    };
    let proxies = TrustedProxies::new(nets);
    let client = proxies.client_address(peer_ip, headers);
    if trusted {
        assert!(client == peer_ip || !proxies.contains(client));
    } else {
        assert_eq!(
            client, peer_ip,
            "an untrusted peer chose its client address"
        );
    }

    let mut request = headers.clone();
    proxy::strip_hop_by_hop(&mut request, false);
    proxy::strip_identity_headers(&mut request, extra);
    let host = headers.get(header::HOST).cloned();
    Peer::new(SocketAddr::new(peer_ip, 4430), &proxies).set_forwarding_headers(&mut request, host);
    // The forwarding headers are the gateway's own by now, even where the config also lists
    // one of them among the extra headers to strip from clients.
    let ours = [
        "x-forwarded-for",
        "forwarded",
        "x-forwarded-proto",
        "x-forwarded-host",
    ];
    for name in request.keys() {
        assert!(
            ours.contains(&name.as_str()) || !is_identity(name.as_str(), extra),
            "identity header {name} reached upstream"
        );
    }
    let xff = HeaderName::from_static("x-forwarded-for");
    if trusted {
        let last = values(&request, &xff);
        assert_eq!(last.len(), 1);
        let text = last[0].to_str().expect("ASCII");
        assert!(
            text.ends_with("192.0.2.7"),
            "x-forwarded-for {text:?} lost the peer"
        );
    } else {
        assert_eq!(values(&request, &xff), ["192.0.2.7"]);
        assert_eq!(
            values(&request, &header::FORWARDED),
            ["for=192.0.2.7;proto=https"]
        );
    }
}

fn check_sanitize(headers: &HeaderMap, method: &Method, has_body: bool) {
    if let Some(media) = request::media_type(headers) {
        assert!(!media.contains(';'));
        assert_eq!(media, media.trim());
        assert_eq!(media, media.to_ascii_lowercase());
    }
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        let _ = request::check_host(host, &["ehr.example.org".to_owned()]);
        assert!(request::check_host(host, &[]).is_ok());
    }
    for value in headers.values() {
        if proxy::acceptable_request_id(value) {
            assert!(value.len() <= 128 && value.as_bytes().iter().all(u8::is_ascii_graphic));
        }
    }
    let strict = RouteSanitize {
        methods: Some(vec![MethodName(Method::GET), MethodName(Method::POST)]),
        max_body_size: Some(ByteSize(100)),
        content_types: Some(vec!["application/fhir+json".into(), "text/plain".into()]),
        ..RouteSanitize::default()
    };
    for (route, max_body) in [(RouteSanitize::default(), 10u64 << 20), (strict, 100)] {
        let rules = RouteRules::new(&Sanitize::default(), &route);
        let plan = rules.check_head(method, headers, None, has_body);
        let announced = headers
            .get(header::CONTENT_LENGTH)
            .map(|v| v.to_str().ok().and_then(|v| v.parse::<u64>().ok()));
        match plan {
            Ok(BodyPlan::Empty) => assert!(!has_body),
            Ok(BodyPlan::Stream { limit }) | Ok(BodyPlan::Inspect { limit, .. }) => {
                assert!(has_body);
                assert!(limit <= max_body, "limit {limit} above {max_body}");
                match announced {
                    Some(Some(length)) => assert!(length <= limit, "{length} > {limit} passed"),
                    Some(None) => panic!("an unreadable Content-Length passed"),
                    None => {}
                }
                if let Ok(BodyPlan::Inspect {
                    kind: BodyKind::Json,
                    ..
                }) = plan
                {
                    let media = request::media_type(headers).expect("JSON without a type");
                    assert!(media == "application/json" || media.ends_with("+json"));
                }
            }
            Err(
                Refusal::MethodNotAllowed
                | Refusal::BodyTooLarge
                | Refusal::MethodOverrideInvalid
                | Refusal::MalformedMultipart,
            ) => {}
            Err(Refusal::UnsupportedMediaType) => assert!(has_body),
            Err(other) => panic!("check_head refused with {other:?}"),
        }
    }
}

fn check_header_rules(headers: &HeaderMap) {
    for version in [http::Version::HTTP_11, http::Version::HTTP_2] {
        let strict = request::check_headers(headers, version, false);
        if strict.is_ok() {
            assert!(headers.keys().all(|n| !n.as_str().contains('_')));
            for name in [header::HOST, header::CONTENT_TYPE, header::AUTHORIZATION] {
                assert!(headers.get_all(name).iter().count() <= 1);
            }
        }
        // Allowing underscores can only turn a refusal into a pass, never the reverse.
        if strict.is_ok() {
            assert!(request::check_headers(headers, version, true).is_ok());
        }
    }
}

fn check_response(headers: &HeaderMap) {
    let mut response = headers.clone();
    hardening::harden_response(&mut response);
    assert!(!response.contains_key(header::SERVER));
    assert!(!response.contains_key("x-powered-by"));
    for (name, value) in hardening::SECURITY_HEADERS {
        assert_eq!(values(&response, &HeaderName::from_static(name)), [value]);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let keep_websocket = control & 1 == 1;
    let has_body = control & 2 == 2;
    let trusted = control & 4 == 4;
    let method = &METHODS[usize::from(control >> 3) % METHODS.len()];

    let mut headers = HeaderMap::new();
    let mut extra = Vec::new();
    for line in rest.split(|b| *b == b'\n') {
        if let Some(name) = line.strip_prefix(b"!") {
            if let Ok(name) = HeaderName::from_bytes(name) {
                extra.push(proxy::identity_header_key(name.as_str()).into_owned());
            }
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }

    let stripped = check_hop_by_hop(&headers, keep_websocket);
    check_identity(&headers, &extra);
    check_identity(&stripped, &extra);
    check_forwarding(&headers, trusted, &extra);
    check_sanitize(&headers, method, has_body);
    check_header_rules(&headers);
    check_response(&headers);
});
