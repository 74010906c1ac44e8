//! Request smuggling and desync attempts against the real gateway over real TLS: each gets the
//! framing guard's fixed refusal, and the upstream never sees a smuggled or altered request.

use crate::harness::{MockUpstream, TestGateway, metrics_containing, raw_exchange, simple_config};

/// Sends `raw`, expects exactly one answer: `status` with `code`; the upstream saw nothing.
async fn refused(
    gateway: &TestGateway,
    upstream: &MockUpstream,
    raw: &str,
    status: u16,
    code: &str,
) {
    let answer = raw_exchange(gateway, raw.as_bytes()).await;
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status} ")),
        "{raw:?}: {answer}"
    );
    assert!(
        answer.contains(&format!(r#""error":"{code}""#)),
        "{raw:?}: {answer}"
    );
    assert!(
        answer.contains("\r\nconnection: close\r\n"),
        "{raw:?}: {answer}"
    );
    assert_eq!(statuses(&answer), [status], "{raw:?}: {answer}");
    assert!(upstream.seen().is_empty(), "{raw:?}: {:?}", upstream.seen());
}

/// The status of every response in `answer`, in order (bodies here never hold a status line).
fn statuses(answer: &str) -> Vec<u16> {
    answer
        .match_indices("HTTP/1.1 ")
        .filter(|(at, _)| {
            *at == 0 || answer[..*at].ends_with('}') || answer[..*at].ends_with("recorded")
        })
        .filter_map(|(at, _)| answer.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

const SMUGGLED: &str = "GET /admin HTTP/1.1\r\nHost: localhost\r\n\r\n";

#[tokio::test]
async fn cl_te_and_te_cl_are_refused() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let cl_te = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
    );
    refused(&gateway, &upstream, &cl_te, 400, "WG-FRAME-018").await;
    let te_cl = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
        SMUGGLED.len()
    );
    refused(&gateway, &upstream, &te_cl, 400, "WG-FRAME-018").await;
}

#[tokio::test]
async fn te_te_obfuscations_are_refused() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let post =
        |te: &str| format!("POST / HTTP/1.1\r\nHost: localhost\r\n{te}\r\n\r\n0\r\n\r\n{SMUGGLED}");
    for (te, status, code) in [
        ("Transfer-Encoding: xchunked", 501, "WG-FRAME-015"),
        ("Transfer-Encoding: chunked, identity", 501, "WG-FRAME-015"),
        ("Transfer-Encoding: identity", 501, "WG-FRAME-015"),
        ("Transfer-Encoding: chunked;x", 501, "WG-FRAME-015"),
        ("Transfer-Encoding : chunked", 400, "WG-FRAME-009"),
        ("Transfer-Encoding:\x0bchunked", 400, "WG-FRAME-010"),
        ("Transfer-Encoding:\r\n chunked", 501, "WG-FRAME-015"),
        (
            "Transfer-Encoding: chunked\r\n identity",
            400,
            "WG-FRAME-008",
        ),
        (
            "X-Pad: 1\r\n\tTransfer-Encoding: chunked",
            400,
            "WG-FRAME-008",
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            400,
            "WG-FRAME-016",
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
            400,
            "WG-FRAME-016",
        ),
    ] {
        refused(&gateway, &upstream, &post(te), status, code).await;
    }
    let http10 =
        "POST / HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    refused(&gateway, &upstream, http10, 400, "WG-FRAME-017").await;

    // A tab is optional whitespace: this one is an honest chunked request.
    let tab = "POST /tab HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding:\tchunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let answer = raw_exchange(&gateway, tab.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri.path(), "/tab");
    assert_eq!(&seen[0].body[..], b"abc");
}

#[tokio::test]
async fn bad_chunk_sizes_never_reach_the_upstream() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    for size in ["0x0", "+5", "5 ;ext", "-1", " 5"] {
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nhello\r\n0\r\n\r\n{SMUGGLED}"
        );
        refused(&gateway, &upstream, &raw, 400, "WG-FRAME-019").await;
    }
}

#[tokio::test]
async fn malformed_lines_and_lengths_are_refused() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    for (raw, status, code) in [
        ("GET / HTTP/1.1\nHost: localhost\n\n", 400, "WG-FRAME-001"),
        (
            "GET / HTTP/1.1\r\nHost: localhost\n\r\n",
            400,
            "WG-FRAME-001",
        ),
        (
            "GET / HTTP/1.1\r\nHost: localhost\rX: y\r\n\r\n",
            400,
            "WG-FRAME-002",
        ),
        (
            "\r\nGET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
            400,
            "WG-FRAME-003",
        ),
        (
            "GET  / HTTP/1.1\r\nHost: localhost\r\n\r\n",
            400,
            "WG-FRAME-004",
        ),
        (
            "GET /caf\u{e9} HTTP/1.1\r\nHost: localhost\r\n\r\n",
            400,
            "WG-FRAME-005",
        ),
        (
            "GET / HTTP/1.2\r\nHost: localhost\r\n\r\n",
            400,
            "WG-FRAME-006",
        ),
        (
            "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1,2\r\n\r\nab",
            400,
            "WG-FRAME-013",
        ),
        (
            "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
            400,
            "WG-FRAME-014",
        ),
        (
            "GET / HTTP/1.1\r\nHost: localhost\r\nX-Nul: a\x00b\r\n\r\n",
            400,
            "WG-FRAME-010",
        ),
    ] {
        refused(&gateway, &upstream, raw, status, code).await;
    }
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(9000)
    );
    refused(&gateway, &upstream, &long, 414, "WG-FRAME-007").await;
}

#[tokio::test]
async fn a_smuggling_attempt_behind_a_valid_request_reaches_nobody() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let raw = format!(
        "POST /first HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello\
         POST /second HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
    );
    let answer = raw_exchange(&gateway, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let refusal = answer.find("HTTP/1.1 400 ").expect(&answer);
    assert!(answer[refusal..].contains("WG-FRAME-018"), "{answer}");
    assert_eq!(statuses(&answer), [200, 400], "{answer}");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, http::Method::POST);
    assert_eq!(seen[0].uri.path(), "/first");
    assert_eq!(&seen[0].body[..], b"hello");

    // Metrics count the refusal by code.
    let metrics = metrics_containing(
        &gateway,
        r#"wardgate_refusals_total{code="WG-FRAME-018"} 1"#,
    )
    .await;
    assert!(
        metrics.contains(r#"wardgate_refusals_total{code="WG-FRAME-018"} 1"#),
        "{metrics}"
    );
}

/// A violation inside a body that is already streaming: the client sees only the refusal, and
/// the upstream never gets a complete request, let alone a second one.
#[tokio::test]
async fn a_violation_mid_body_answers_only_the_refusal() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let raw = format!(
        "POST /cut HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0x0\r\n\r\n{SMUGGLED}"
    );
    let answer = raw_exchange(&gateway, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("WG-FRAME-019"), "{answer}");
    assert_eq!(statuses(&answer), [400], "{answer}");
    // The upstream may or may not have got the head before the cut; if it did, its body must
    // end in an error, never look complete.
    let seen = upstream.seen_even_cut();
    assert!(seen.len() <= 1, "{seen:?}");
    if let [seen] = &seen[..] {
        assert_eq!(seen.uri.path(), "/cut");
        assert!(seen.cut.is_some(), "a cut body looked whole: {seen:?}");
    }
}

#[tokio::test]
async fn valid_pipelined_requests_all_pass_in_order() {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&simple_config(&upstream.url())).await;
    let raw = "GET /1 HTTP/1.1\r\nHost: localhost\r\n\r\n\
               POST /2 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello\
               POST /3 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
               3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Checksum: 9\r\n\r\n\
               GET /4 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(&gateway, raw.as_bytes()).await;
    assert_eq!(statuses(&answer), [200, 200, 200, 200], "{answer}");
    assert!(!answer.contains("WG-FRAME"), "{answer}");
    let seen = upstream.seen();
    let summary: Vec<_> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.uri.path(), &s.body[..]))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("GET", "/1", &b""[..]),
            ("POST", "/2", &b"hello"[..]),
            ("POST", "/3", &b"abcde"[..]),
            ("GET", "/4", &b""[..]),
        ]
    );
}
