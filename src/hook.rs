//! Webhooks: a JSON summary POSTed to a path on one of the configured upstreams (its TLS and
//! timeouts), in the background. Break-glass uses are announced this way, and the audit trail's
//! checkpoints are sent out of the gateway's host with it. A hook never holds up what it
//! reports: a failed delivery is an `ERROR` line (`wardgate::hook`), never a refusal.

use std::sync::Arc;

use bytes::Bytes;

use crate::body::RequestBody;
use crate::proxy::UpstreamClient;

/// Where a summary goes: an upstream's client and the path on it.
#[derive(Clone)]
pub struct Hook {
    pub client: Arc<UpstreamClient>,
    pub path: String,
}

impl Hook {
    /// POSTs `summary` on `runtime`, in the background; `what` names it in the log.
    pub fn post(
        &self,
        what: &'static str,
        summary: &serde_json::Value,
        runtime: &tokio::runtime::Handle,
    ) {
        let Ok(uri) = self.client.uri_for(&self.path, None) else {
            tracing::error!(target: "wardgate::hook", hook = what, "the hook's path is not a valid URI");
            return;
        };
        let request = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(RequestBody::Buffered(Some(Bytes::from(
                summary.to_string(),
            ))));
        let (Ok(request), client) = (request, self.client.clone()) else {
            return;
        };
        runtime.spawn(async move {
            match client.send(request).await {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => tracing::error!(
                    target: "wardgate::hook",
                    hook = what,
                    status = response.status().as_u16(),
                    "refused by its receiver"
                ),
                Err(failure) => tracing::error!(
                    target: "wardgate::hook",
                    hook = what,
                    cause = failure.cause,
                    "could not be delivered"
                ),
            }
        });
    }
}
