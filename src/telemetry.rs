//! Request log and Prometheus metrics.
//!
//! Every request ends in exactly one record, written when its response body is done or the
//! client went away: time, request id, client, method, normalized path, route, upstream, status,
//! bytes, duration and the refusal code if there was one. Records name no secrets: the query
//! string and headers are never logged. Metrics live in a recorder owned by the gateway (no
//! global registry), rendered on the admin listener's `/metrics`.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::HeaderValue;
use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use serde::Deserialize;

use crate::audit::AuditRecord;
use crate::audit::sink::AuditSink;
use crate::identity::UserId;
use crate::refusal::Violation;

const REQUESTS: &str = "wardgate_requests_total";
const DURATION: &str = "wardgate_request_duration_seconds";
const UPSTREAM_ERRORS: &str = "wardgate_upstream_errors_total";
const OPEN_CONNECTIONS: &str = "wardgate_open_connections";
const TLS_FAILURES: &str = "wardgate_tls_handshake_failures_total";
const REFUSALS: &str = "wardgate_refusals_total";
const CONNECTIONS_ENDED: &str = "wardgate_connections_ended_total";
const UPKEEP_REMOVED: &str = "wardgate_upkeep_removed_total";
const UPKEEP_FAILURES: &str = "wardgate_upkeep_failures_total";
const AUDIT_PENDING: &str = "wardgate_audit_records_pending";
const AUDIT_WRITABLE: &str = "wardgate_audit_trail_writable";
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The route label of requests that matched no route.
pub const NO_ROUTE: &str = "(none)";

const METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The `log:` section of the configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub format: LogFormat,
    /// One record per request.
    pub requests: bool,
    /// A `tracing` filter such as `info` or `wardgate=debug`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            requests: true,
            level: "info".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

/// Installs the process-wide log subscriber. Called once, by the binary.
pub fn init_logging(log: &Log) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

/// Metric handles and the request log switch, shared by every connection.
pub struct Telemetry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    log_requests: bool,
    open_connections: Gauge,
    tls_failures: Counter,
}

impl Telemetry {
    pub fn new(log_requests: bool) -> Arc<Self> {
        let builder = PrometheusBuilder::new();
        // Only a non-empty, finite bucket list is refused; ours is fixed and valid.
        let builder =
            match builder.set_buckets_for_metric(Matcher::Full(DURATION.into()), LATENCY_BUCKETS) {
                Ok(with_buckets) => with_buckets,
                Err(_) => PrometheusBuilder::new(),
            };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        recorder.describe_counter(
            KeyName::from(REQUESTS),
            None,
            "Requests answered, by route and status".into(),
        );
        recorder.describe_histogram(
            KeyName::from(DURATION),
            Some(Unit::Seconds),
            "Time from request head to the end of the response body, by route".into(),
        );
        recorder.describe_counter(
            KeyName::from(UPSTREAM_ERRORS),
            None,
            "Upstream connection, timeout and protocol failures, by upstream and kind".into(),
        );
        recorder.describe_gauge(
            KeyName::from(OPEN_CONNECTIONS),
            None,
            "Client connections open now".into(),
        );
        recorder.describe_counter(
            KeyName::from(TLS_FAILURES),
            None,
            "TLS handshakes that failed or timed out".into(),
        );
        recorder.describe_counter(
            KeyName::from(REFUSALS),
            None,
            "Connections refused below the HTTP layer (framing guard), by code".into(),
        );
        recorder.describe_counter(
            KeyName::from(CONNECTIONS_ENDED),
            None,
            "Connections the gateway ended for a limit or deadline: per_address_limit, idle (HTTP/2), stalled (HTTP/2 data not taken)".into(),
        );
        recorder.describe_counter(
            KeyName::from(UPKEEP_REMOVED),
            None,
            "Expired state the upkeep task removed: sessions, challenges, enrollments, lockouts, limiter_keys".into(),
        );
        recorder.describe_counter(
            KeyName::from(UPKEEP_FAILURES),
            None,
            "Upkeep sweeps that failed (store error or panic); the next one retries".into(),
        );
        recorder.describe_gauge(
            KeyName::from(AUDIT_PENDING),
            None,
            "Audit records queued and not yet written (it grows only while the trail cannot be written)".into(),
        );
        recorder.describe_gauge(
            KeyName::from(AUDIT_WRITABLE),
            None,
            "1 while the audit trail's last group was written, 0 while it cannot be".into(),
        );
        let open_connections =
            recorder.register_gauge(&Key::from_static_name(OPEN_CONNECTIONS), &METADATA);
        let tls_failures =
            recorder.register_counter(&Key::from_static_name(TLS_FAILURES), &METADATA);
        Arc::new(Self {
            recorder,
            handle,
            log_requests,
            open_connections,
            tls_failures,
        })
    }

    /// The audit trail's gauges: records pending, and whether it can be written.
    pub fn audit_gauges(&self) -> crate::audit::sink::Gauges {
        let gauge = |name| {
            self.recorder
                .register_gauge(&Key::from_static_name(name), &METADATA)
        };
        crate::audit::sink::Gauges {
            pending: gauge(AUDIT_PENDING),
            writable: gauge(AUDIT_WRITABLE),
        }
    }

    /// Whether requests are logged (the record then keeps the path).
    pub fn logs_requests(&self) -> bool {
        self.log_requests
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drains histogram samples into their buckets; run periodically so memory stays flat when
    /// nobody scrapes.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    pub fn connection_opened(&self) {
        self.open_connections.increment(1.0);
    }

    pub fn connection_closed(&self) {
        self.open_connections.decrement(1.0);
    }

    /// A connection the gateway ended itself (`reason` is a fixed label).
    pub fn connection_ended(&self, reason: &'static str) {
        let key = Key::from_parts(CONNECTIONS_ENDED, vec![Label::new("reason", reason)]);
        self.recorder.register_counter(&key, &METADATA).increment(1);
        tracing::debug!(reason, "connection ended by the gateway");
    }

    pub fn tls_handshake_failed(&self) {
        self.tls_failures.increment(1);
    }

    /// A connection the framing guard refused: counted by code and, with request logging on,
    /// one record in place of the request record it never became.
    /// Counts a refusal by its stable code (`wardgate_refusals_total{code}`).
    fn refused(&self, code: &'static str) {
        let key = Key::from_parts(REFUSALS, vec![Label::new("code", code)]);
        self.recorder.register_counter(&key, &METADATA).increment(1);
    }

    pub fn framing_refused(&self, client: IpAddr, violation: Violation) {
        self.refused(violation.refusal().code());
        if self.log_requests {
            tracing::warn!(
                target: "wardgate::request",
                client = %client,
                status = violation.refusal().status().as_u16(),
                code = violation.refusal().code(),
                "request refused by the framing guard",
            );
        }
    }

    /// `count` entries of `kind` (a fixed label) removed by an upkeep sweep.
    pub fn upkeep_removed(&self, kind: &'static str, count: usize) {
        let key = Key::from_parts(UPKEEP_REMOVED, vec![Label::new("kind", kind)]);
        let count = u64::try_from(count).unwrap_or(u64::MAX);
        self.recorder
            .register_counter(&key, &METADATA)
            .increment(count);
    }

    pub fn upkeep_failed(&self) {
        self.recorder
            .register_counter(&Key::from_static_name(UPKEEP_FAILURES), &METADATA)
            .increment(1);
    }

    pub fn upstream_error(&self, upstream: &SharedString, kind: &'static str) {
        let key = Key::from_parts(
            UPSTREAM_ERRORS,
            vec![
                Label::new("upstream", upstream.clone()),
                Label::new("kind", kind),
            ],
        );
        self.recorder.register_counter(&key, &METADATA).increment(1);
    }

    /// The metric handles of one route, registered once when the route table is built.
    pub fn route_labels(&self, route: SharedString, upstream: SharedString) -> RouteLabels {
        let key = Key::from_parts(DURATION, vec![Label::new("route", route.clone())]);
        RouteLabels {
            latency: self.recorder.register_histogram(&key, &METADATA),
            requests: std::array::from_fn(|_| OnceLock::new()),
            route,
            upstream,
        }
    }
}

/// Statuses whose request counters each route keeps at hand; others are looked up.
const COMMON_STATUSES: [u16; 16] = [
    200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 413, 429, 502, 504,
];

/// Names a route carries into its records, and its metric handles.
pub struct RouteLabels {
    pub route: SharedString,
    pub upstream: SharedString,
    latency: Histogram,
    /// Created on first use, so `/metrics` lists only statuses that happened.
    requests: [OnceLock<Counter>; COMMON_STATUSES.len()],
}

impl RouteLabels {
    fn count(&self, recorder: &PrometheusRecorder, status: u16) {
        let register = || {
            let labels = vec![
                Label::new("route", self.route.clone()),
                Label::new("status", status.to_string()),
            ];
            recorder.register_counter(&Key::from_parts(REQUESTS, labels), &METADATA)
        };
        match COMMON_STATUSES.iter().position(|s| *s == status) {
            Some(slot) => self.requests[slot].get_or_init(register).increment(1),
            None => register().increment(1),
        }
    }
}

/// What the phases learn of a request while it is served: the request's context, closed into
/// its log line and metrics (and, with the audit trail, its audit record).
pub struct RequestRecord {
    pub start: Instant,
    pub request_id: HeaderValue,
    pub client: IpAddr,
    pub method: http::Method,
    /// The normalized path, kept only when requests are logged.
    pub path: Option<String>,
    pub route: Option<Arc<RouteLabels>>,
    /// The user of the session the request carried, once `authenticate` has seen it.
    pub user: Option<UserId>,
    pub status: u16,
    pub code: Option<&'static str>,
    /// Unix seconds when the request arrived.
    pub at: u64,
    /// What the access policy decided, on a patient-data route.
    pub access: Option<RecordAccess>,
    /// The sequence number of the request's `decision` record, once it is in the audit trail.
    pub decided: Option<u64>,
}

/// The access decision of a patient-data request, as the audit trail keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordAccess {
    pub roles: Vec<String>,
    pub patient: Option<String>,
    pub categories: Vec<String>,
    pub purpose_of_use: Option<&'static str>,
    pub grants: Vec<String>,
}

impl RequestRecord {
    /// The record as the audit trail keeps it, with what is known now.
    pub fn audit(&self, kind: &str, labels: Option<&RouteLabels>) -> AuditRecord {
        let access = self.access.clone().unwrap_or_default();
        AuditRecord {
            kind: kind.to_owned(),
            time: self.at,
            request_id: self.request_id.to_str().ok().map(str::to_owned),
            client: Some(self.client.to_string()),
            user: self.user.map(|user| user.to_string()),
            roles: access.roles,
            route: labels.map(|labels| labels.route.to_string()),
            method: Some(self.method.to_string()),
            path: self.path.clone(),
            patient: access.patient,
            categories: access.categories,
            decision: Some(self.decision().to_owned()),
            code: self.code.map(str::to_owned),
            purpose_of_use: access.purpose_of_use.map(str::to_owned),
            grants: access.grants,
            ..AuditRecord::default()
        }
    }

    /// The record of how the request ended: after a recorded decision, only what the decision
    /// record does not say (`audit::Reader` joins them).
    pub fn ended(&self, bytes: u64, complete: bool) -> AuditRecord {
        let base = match self.decided {
            Some(seq) => AuditRecord {
                kind: "request".into(),
                time: self.at,
                request_id: self.request_id.to_str().ok().map(str::to_owned),
                decision: Some(self.decision().to_owned()),
                code: self.code.map(str::to_owned),
                decided_in: Some(seq),
                ..AuditRecord::default()
            },
            None => self.audit("request", self.route.as_deref()),
        };
        AuditRecord {
            status: Some(self.status),
            bytes: Some(bytes),
            complete: Some(complete),
            ..base
        }
    }

    fn decision(&self) -> &'static str {
        match self.code {
            None => "allowed",
            Some(code) if code.starts_with("WG-UP-") => "failed",
            Some(_) => "refused",
        }
    }
}

/// An open record, closed exactly once by the response body (see [`crate::body::ResponseBody`]).
pub struct Finished {
    telemetry: Arc<Telemetry>,
    record: Box<RequestRecord>,
    /// Labels of requests that matched no route.
    unrouted: Arc<RouteLabels>,
    upstream_failed: bool,
    audit: Option<Arc<AuditSink>>,
}

impl Finished {
    /// `audit`: the trail that gets the request's record when it ends.
    pub fn new(
        telemetry: Arc<Telemetry>,
        record: RequestRecord,
        unrouted: Arc<RouteLabels>,
        audit: Option<Arc<AuditSink>>,
    ) -> Self {
        Self {
            telemetry,
            record: Box::new(record),
            unrouted,
            upstream_failed: false,
            audit,
        }
    }

    pub fn upstream_failed_midway(&mut self) {
        if !self.upstream_failed {
            self.upstream_failed = true;
            if let Some(labels) = &self.record.route {
                self.telemetry.upstream_error(&labels.upstream, "body");
            }
        }
    }

    /// Emits the metrics and the log line. `complete` is false when the body was cut short.
    pub fn close(self, bytes: u64, complete: bool) {
        #[allow(clippy::disallowed_methods)] // the edge: the record ends now
        let duration = Instant::now().saturating_duration_since(self.record.start);
        let record = &self.record;
        let labels = record.route.as_ref().unwrap_or(&self.unrouted);
        labels.count(&self.telemetry.recorder, record.status);
        if let Some(code) = record.code {
            self.telemetry.refused(code);
        }
        labels.latency.record(duration.as_secs_f64());
        if self.telemetry.log_requests {
            log_request(record, labels, bytes, duration, complete);
        }
        if let Some(audit) = &self.audit {
            audit.record(&record.ended(bytes, complete));
        }
    }
}

fn log_request(
    record: &RequestRecord,
    labels: &RouteLabels,
    bytes: u64,
    duration: Duration,
    complete: bool,
) {
    tracing::info!(
        target: "wardgate::request",
        request_id = record.request_id.to_str().unwrap_or_default(),
        client = %record.client,
        method = %record.method,
        path = record.path.as_deref().unwrap_or_default(),
        user = record.user.map(|user| user.to_string()).unwrap_or_default(),
        route = &*labels.route,
        upstream = &*labels.upstream,
        status = record.status,
        bytes,
        duration_us = duration.as_micros() as u64,
        code = record.code.unwrap_or(""),
        complete,
    );
}
