//! Phase 2, early: who is asking, and the record every later phase fills in.
//!
//! Runs first on every request, before anything is checked. Reads the peer (worked out once per
//! connection) and two headers; decides nothing and refuses nothing. A request id is kept only
//! from a trusted proxy, and only when it is short visible ASCII: anyone else could plant one
//! that collides with another request's log lines. The client address is the peer's, or,
//! behind trusted proxies, the right-most `X-Forwarded-For` hop that is not one of them.

use std::time::Instant;

use http::Request;
use rand::RngCore;

use crate::proxy::{self, Peer, TrustedProxies, X_REQUEST_ID};
use crate::telemetry::RequestRecord;

/// Phase 2: the request's record, opened at `start`; a new request id comes from `rng`.
pub(super) fn open<B>(
    peer: &Peer,
    trusted: &TrustedProxies,
    request: &Request<B>,
    start: Instant,
    rng: &mut dyn RngCore,
) -> RequestRecord {
    let request_id = match request.headers().get(X_REQUEST_ID) {
        Some(id) if peer.trusted && proxy::acceptable_request_id(id) => id.clone(),
        _ => proxy::new_request_id(rng),
    };
    RequestRecord {
        start,
        request_id,
        client: trusted.client_address(peer.addr.ip(), request.headers()),
        method: request.method().clone(),
        path: None,
        route: None,
        user: None,
        status: 0,
        code: None,
        at: 0,
        access: None,
        decided: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::net::{IpAddr, SocketAddr};

    const PROXY: &str = "10.0.0.1:4000";

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec!["10.0.0.0/24".parse().unwrap()])
    }

    fn record(peer: &str, seed: u64) -> RequestRecord {
        let request = Request::builder()
            .uri("/")
            .header(X_REQUEST_ID, "abc-1")
            .header("x-forwarded-for", "203.0.113.9, 10.0.0.7")
            .body(())
            .unwrap();
        let trusted = trusted();
        let peer = Peer::new(peer.parse::<SocketAddr>().unwrap(), &trusted);
        #[allow(clippy::disallowed_methods)] // a test: any instant will do
        let start = Instant::now();
        open(
            &peer,
            &trusted,
            &request,
            start,
            &mut StdRng::seed_from_u64(seed),
        )
    }

    #[test]
    fn a_trusted_proxy_hands_on_the_request_id_and_the_client() {
        let record = record(PROXY, 1);
        assert_eq!(record.request_id, "abc-1");
        assert_eq!(record.client, "203.0.113.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn anyone_else_gets_a_fresh_id_and_is_the_client() {
        const OUTSIDER: &str = "198.51.100.4:4000";
        let fresh = record(OUTSIDER, 1);
        assert_ne!(fresh.request_id, "abc-1");
        assert_eq!(fresh.request_id.len(), 32);
        assert_eq!(
            fresh.request_id,
            record(OUTSIDER, 1).request_id,
            "from the generator given"
        );
        assert_ne!(fresh.request_id, record(OUTSIDER, 2).request_id);
        assert_eq!(fresh.client, "198.51.100.4".parse::<IpAddr>().unwrap());
    }
}
