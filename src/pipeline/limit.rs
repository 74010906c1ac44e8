//! Phases 5 and 8, rate limits: the limiter's decision as the pipeline's answer.
//!
//! Phase 5 runs after `route` and before any body is read or any session looked up: per client
//! address, so an anonymous flood is refused before it costs a store read. Phase 8 runs after
//! `authenticate`: per user, per route, per user and route. Both refuse with 429 and say when to
//! come back (`Retry-After`, `RateLimit`, `RateLimit-Policy`); a limiter whose key table is
//! full refuses new keys (`WG-RATE-002`) instead of forgetting old ones, and a shared limiter
//! whose store does not answer refuses (503 `WG-STORE-001`), never lets a request through
//! uncounted: a public route's requests are then counted in this replica instead
//! (`store::redis::limiter`).

use crate::ratelimit::{Decision, DenyCause};
use crate::refusal::Refusal;

use crate::refused::Refused;

/// A rate-limit denial as a refusal, with its `Retry-After` and `RateLimit` headers.
pub(super) fn deny(decision: &Decision) -> Result<(), Refused> {
    match decision {
        Decision::Deny { cause, .. } => Err(match cause {
            DenyCause::Exhausted => Refused::with_headers(Refusal::RateLimited, decision.headers()),
            DenyCause::TooManyKeys => {
                Refused::with_headers(Refusal::RateLimitFull, decision.headers())
            }
            // Nothing is known of the limit's state: no `RateLimit` headers to give.
            DenyCause::Unavailable => Refused::because(
                Refusal::StateUnavailable,
                &"the shared store did not count the rate limits",
            ),
        }),
        Decision::Allow { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::{LimitKind, LimitSpec, Standing};
    use std::time::Duration;

    fn standing(remaining: u32) -> Standing {
        Standing {
            kind: LimitKind::Client,
            spec: LimitSpec::new(10, Duration::from_secs(60), 5).unwrap(),
            remaining,
            reset: Duration::from_secs(6),
        }
    }

    fn denied(cause: DenyCause) -> Refused {
        deny(&Decision::Deny {
            retry_after: Duration::from_secs(6),
            binding: standing(0),
            cause,
        })
        .unwrap_err()
    }

    #[test]
    fn a_denial_says_why_and_when_to_come_back() {
        for (cause, refusal) in [
            (DenyCause::Exhausted, Refusal::RateLimited),
            (DenyCause::TooManyKeys, Refusal::RateLimitFull),
        ] {
            let refused = denied(cause);
            let (got, headers) = refused.parts();
            assert_eq!(got, refusal);
            let retry = headers.iter().find(|(name, _)| name == "retry-after");
            assert_eq!(retry.map(|(_, value)| value.as_bytes()), Some(&b"6"[..]));
        }
    }

    #[test]
    fn an_uncounted_request_is_refused_as_state_unavailable_without_limit_headers() {
        let refused = denied(DenyCause::Unavailable);
        let (refusal, headers) = refused.parts();
        assert_eq!(refusal, Refusal::StateUnavailable);
        assert!(headers.is_empty(), "{headers:?}");
    }

    #[test]
    fn a_pass_goes_on() {
        assert!(
            deny(&Decision::Allow {
                binding: Some(standing(3))
            })
            .is_ok()
        );
        assert!(deny(&Decision::Allow { binding: None }).is_ok());
    }
}
