//! JSON and form bodies (`RouteRules::check_body`) and query strings (`scan_query`,
//! `RouteRules::check_query`) on arbitrary bytes.
//!
//! - Nothing panics, and each input is judged in bounded time (libFuzzer's `-timeout`).
//! - The three injection modes agree: `block` refuses exactly what `log` reports, with the same
//!   attack, and `off` finds nothing. Shape errors (depth, syntax, encoding) do not depend on
//!   the mode.
//! - A JSON body that passes the depth check is really no deeper than `max_depth`, so the
//!   pre-parse depth count cannot be fooled into letting a deep document reach the parser.
//! - A form body refused as malformed has a pair that does not decode; one that is accepted
//!   decodes pair by pair.
//!
//! Input: one control byte (bits 0-1: JSON, form, query; bits 2-7: `max_depth` - 1), then the
//! body or query.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wardgate::config::{Injection, InjectionMode, JsonLimits, RouteSanitize, Sanitize};
use wardgate::refusal::Refusal;
use wardgate::sanitize::injection::{self, FieldAllowList, Finding};
use wardgate::sanitize::request::{BodyKind, BodyPlan, RouteRules};

fn rules(mode: InjectionMode, max_depth: usize) -> RouteRules {
    let route = RouteSanitize {
        json: Some(JsonLimits {
            max_depth,
            ..JsonLimits::default()
        }),
        injection: Some(Injection {
            mode,
            allow_fields: vec!["text.div".to_owned()],
        }),
        ..RouteSanitize::default()
    };
    RouteRules::new(&Sanitize::default(), &route)
}

/// Nesting depth of a parsed document, without recursion.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((node, level)) = stack.pop() {
        match node {
            Value::Array(items) => {
                deepest = deepest.max(level + 1);
                stack.extend(items.iter().map(|v| (v, level + 1)));
            }
            Value::Object(map) => {
                deepest = deepest.max(level + 1);
                stack.extend(map.values().map(|v| (v, level + 1)));
            }
            _ => {}
        }
    }
    deepest
}

type Verdict = Result<Option<Finding>, Refusal>;

/// `block`, `log` and `off` tell one story.
fn modes_agree(input: &[u8], block: &Verdict, log: &Verdict, off: &Verdict) {
    match (block, log) {
        (Err(Refusal::Injection(attack)), Ok(Some(finding))) => {
            assert_eq!(
                *attack, finding.attack,
                "{input:?}: block and log name other attacks"
            );
        }
        (Ok(None), Ok(None)) => {}
        (Err(a), Err(b)) => assert_eq!(a, b, "{input:?}: shape verdict depends on the mode"),
        _ => panic!("{input:?}: block {block:?} but log {log:?}"),
    }
    match (log, off) {
        (Ok(_), Ok(None)) => {}
        (Err(a), Err(b)) => assert_eq!(a, b, "{input:?}: shape verdict depends on the mode"),
        _ => panic!("{input:?}: log {log:?} but off {off:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let max_depth = 1 + usize::from(control >> 2);
    let [block, log, off] =
        [InjectionMode::Block, InjectionMode::Log, InjectionMode::Off].map(|m| rules(m, max_depth));
    match control & 3 {
        3 => {
            // Multipart, with the boundary read from a content type as check_head does.
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("multipart/form-data; boundary=XyZ"),
            );
            let plan = block.check_head(&http::Method::POST, &headers, None, true);
            let Ok(BodyPlan::Inspect { kind, .. }) = plan else {
                panic!("a multipart head was not planned for inspection: {plan:?}");
            };
            let verdicts = [&block, &log, &off].map(|r| r.check_body(kind, input));
            modes_agree(input, &verdicts[0], &verdicts[1], &verdicts[2]);
            match &verdicts[2] {
                Ok(_) => assert!(input.starts_with(b"--XyZ\r\n") || input.starts_with(b"--XyZ--")),
                Err(Refusal::MalformedMultipart) => {}
                Err(Refusal::MethodOverrideInvalid | Refusal::MethodNotAllowed) => {
                    assert!(input.windows(7).any(|w| w == b"_method"));
                }
                Err(other) => panic!("unexpected refusal of a multipart body: {other:?}"),
            }
        }
        0 => {
            let verdicts = [&block, &log, &off].map(|r| r.check_body(BodyKind::Json, input));
            modes_agree(input, &verdicts[0], &verdicts[1], &verdicts[2]);
            let parsed = serde_json::from_slice::<Value>(input);
            match &verdicts[2] {
                Ok(_) => {
                    let value = parsed.expect("check_body accepted JSON that does not parse");
                    let real = depth(&value);
                    assert!(
                        real <= max_depth,
                        "depth {real} passed a limit of {max_depth}"
                    );
                }
                Err(Refusal::MalformedJson) => assert!(parsed.is_err(), "valid JSON refused"),
                // serde_json keeps the last of two equal keys; the gateway refuses them.
                Err(Refusal::JsonDuplicateKey) => assert!(parsed.is_ok(), "{parsed:?}"),
                Err(Refusal::JsonTooDeep) => {
                    if let Ok(value) = parsed {
                        assert!(
                            depth(&value) > max_depth,
                            "a shallow document refused as deep"
                        );
                    }
                }
                Err(other) => panic!("unexpected refusal of a JSON body: {other:?}"),
            }
        }
        1 => {
            let verdicts = [&block, &log, &off].map(|r| r.check_body(BodyKind::Form, input));
            modes_agree(input, &verdicts[0], &verdicts[1], &verdicts[2]);
            let pairs_decode = injection::form_pairs(input).all(|pair| pair.is_ok());
            match &verdicts[2] {
                Ok(_) => assert!(pairs_decode, "a form with an undecodable pair accepted"),
                Err(Refusal::MalformedForm) => assert!(!pairs_decode, "a decodable form refused"),
                Err(Refusal::MethodOverrideInvalid | Refusal::MethodNotAllowed) => {
                    assert!(input.windows(7).any(|w| w == b"_method"));
                }
                Err(other) => panic!("unexpected refusal of a form body: {other:?}"),
            }
        }
        _ => {
            let query = String::from_utf8_lossy(input);
            let verdicts = [&block, &log, &off].map(|r| r.check_query(&query));
            modes_agree(input, &verdicts[0], &verdicts[1], &verdicts[2]);
            let direct = injection::scan_query(&query, &FieldAllowList::default());
            assert_eq!(
                direct.as_ref().map(|f| f.attack),
                verdicts[1]
                    .as_ref()
                    .ok()
                    .cloned()
                    .flatten()
                    .map(|f| f.attack),
                "scan_query and check_query disagree"
            );
        }
    }
});
