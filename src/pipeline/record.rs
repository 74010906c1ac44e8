//! Phase 11, record: the request's one log line and its metrics.
//!
//! Runs for every request, allowed, refused or failed, and cannot refuse. The record the
//! phases filled in is closed exactly once, when the response body ends or the client leaves
//! (`body.rs`), so the duration and the outcome are those the client saw. The audit trail will
//! hang off this point.

use std::sync::Arc;

use http::Response;

use crate::body::ResponseBody;
use crate::telemetry::{Finished, RequestRecord, RouteLabels, Telemetry};

/// Phase 11: `record` travels with the response body, to be closed when it ends.
pub(super) fn attach(
    response: Response<ResponseBody>,
    record: RequestRecord,
    telemetry: &Arc<Telemetry>,
    unrouted: &Arc<RouteLabels>,
) -> Response<ResponseBody> {
    let finished = Finished::new(telemetry.clone(), record, unrouted.clone());
    response.map(|body| body.with_record(finished))
}
