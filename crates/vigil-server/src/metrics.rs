//! Prometheus metrics, encoded in the Prometheus text format or OpenMetrics (served by
//! `api::metrics`, `GET /metrics`).
//!
//! Two kinds:
//! - the server's own counters and histograms ([`Metrics`], owned by the app as
//!   `app.metrics`), bumped by one-line hooks where things happen (heartbeats and HTTP requests
//!   in the API's middleware, flushes, detection, event writes, SSE streams);
//! - the fleet (`vigil_services`, `vigil_service_*`), computed at scrape time from the
//!   registry: each service's lock is held just long enough to copy a few fields, as a list
//!   does, and the text is encoded after every lock is released.
//!
//! Labels are stable: `host`, `binary`, `zone`, `source` for a service (never an id, so a
//! service registered again is the same series), route templates (axum's `MatchedPath`, never
//! a raw path) for HTTP.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use compact_str::CompactString;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::TypedMetric;
use prometheus_client::registry::Registry;

use crate::model::{seconds, EventKind};

/// Route template of the heartbeat, whose answers are also counted as heartbeats received.
const HEARTBEAT_ROUTE: &str = "/v1/services/{id}/heartbeat";
/// The batch heartbeat route's template.
const BATCH_ROUTE: &str = "/v1/heartbeats";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Static strings only: a request's labels cost no allocation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

/// A route template as a `&'static str`: the templates are the router's, a few dozen at most,
/// each kept once for the life of the process.
pub(crate) fn route_label(route: Option<&str>) -> &'static str {
    static KNOWN: parking_lot::RwLock<Vec<&'static str>> = parking_lot::RwLock::new(Vec::new());
    let Some(route) = route else {
        return "unmatched";
    };
    if let Some(known) = KNOWN.read().iter().find(|known| **known == route) {
        return known;
    }
    let mut known = KNOWN.write();
    if let Some(found) = known.iter().find(|known| **known == route) {
        return found;
    }
    let leaked: &'static str = Box::leak(route.to_owned().into_boxed_str());
    known.push(leaked);
    leaked
}

/// An HTTP method as a `&'static str`.
pub(crate) fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// Buckets of how late heartbeats arrive (gap minus `report_interval`, seconds; negative is
/// early).
const LATENESS_BUCKETS: [f64; 14] = [
    -1.0, -0.5, -0.1, -0.01, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets of durations that are normally short (flushes, detection lag, requests), seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The server's own metrics. Cheap to bump: atomics, and a hashed family lookup for labelled
/// ones.
pub(crate) struct Metrics {
    registry: Registry,
    heartbeats: Family<OutcomeLabels, Counter>,
    lateness: Histogram,
    flush_duration: Histogram,
    flush_rows: Counter,
    flush_failures: Counter,
    detection_lag: Histogram,
    events_written: Family<KindLabels, Counter>,
    streams: Gauge,
    requests: Family<HttpLabels, Counter>,
    request_duration: Family<HttpLabels, Histogram>,
    protocols: Family<ProtocolLabels, Counter>,
    /// The series the requests of a fleet update, looked up once: a family's lookup (its
    /// labels hashed, under a lock) costs a tenth of a heartbeat's instructions.
    hot: HotSeries,
    per_service: bool,
}

/// A handle on `protocol`'s series. In a function of its own: the guard `get_or_create`
/// returns holds the family's lock, and a second lookup in the same expression (one that
/// must create its series) would wait for it forever.
fn protocol_series(protocols: &Family<ProtocolLabels, Counter>, protocol: &'static str) -> Counter {
    protocols
        .get_or_create(&ProtocolLabels { protocol })
        .clone()
}

/// Handles on the series of the two heartbeat routes answered 200 to POST, and of the two
/// protocols; each shares its counts with the family's series of the same labels.
struct HotSeries {
    /// (route, its duration, its requests, its count of heartbeats by outcome `ok` if any).
    routes: Vec<(&'static str, Histogram, Counter, Option<Counter>)>,
    http1: Counter,
    http2: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The metrics of a server; `per_service` exports one series per service and family
    /// (`metrics.per_service`).
    pub(crate) fn new(per_service: bool, service_down_time_s: f64) -> Metrics {
        let mut registry = Registry::default();
        let heartbeats = Family::<OutcomeLabels, Counter>::default();
        // Every outcome from 0, so that rates have a start.
        for outcome in ["ok", "not_found", "invalid", "error"] {
            let _ = heartbeats.get_or_create(&OutcomeLabels { outcome });
        }
        registry.register(
            "vigil_heartbeats_received",
            "Heartbeats received over HTTP, by outcome (ok, not_found, invalid, error)",
            heartbeats.clone(),
        );
        let lateness = Histogram::new(LATENESS_BUCKETS);
        registry.register(
            "vigil_heartbeat_lateness_seconds",
            "How late heartbeats arrive: the gap since the service's previous heartbeat minus its report_interval (negative: early)",
            lateness.clone(),
        );
        let flush_duration = Histogram::new(DURATION_BUCKETS);
        registry.register(
            "vigil_flush_duration_seconds",
            "Duration of one flush of heartbeats to the database, failed ones included",
            flush_duration.clone(),
        );
        let flush_rows = Counter::default();
        registry.register(
            "vigil_flush_rows",
            "Service rows written by heartbeat flushes",
            flush_rows.clone(),
        );
        let flush_failures = Counter::default();
        registry.register(
            "vigil_flush_failures",
            "Heartbeat flushes that failed (the batch is kept in memory and written later)",
            flush_failures.clone(),
        );
        let detection_lag = Histogram::new(DURATION_BUCKETS);
        registry.register(
            "vigil_detection_lag_seconds",
            "From a service's down deadline to the detector declaring it down",
            detection_lag.clone(),
        );
        let events_written = Family::<KindLabels, Counter>::default();
        registry.register(
            "vigil_events_written",
            "Events this server wrote to the history, by kind",
            events_written.clone(),
        );
        let streams = Gauge::default();
        registry.register(
            "vigil_sse_streams",
            "Server-Sent Events streams open (GET /v1/events/stream)",
            streams.clone(),
        );
        let requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "vigil_http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        let request_duration = Family::<HttpLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(DURATION_BUCKETS)) as fn() -> Histogram,
        );
        registry.register(
            "vigil_http_request_duration_seconds",
            "Time to answer an HTTP request (to its response head), by route template, method and status",
            request_duration.clone(),
        );
        let protocols = Family::<ProtocolLabels, Counter>::default();
        registry.register(
            "vigil_http_requests_by_protocol",
            "HTTP requests received, by protocol version (HTTP/1.1, HTTP/2)",
            protocols.clone(),
        );
        let service_down_time: Gauge<f64, AtomicU64> = Gauge::default();
        service_down_time.set(service_down_time_s);
        registry.register(
            "vigil_service_down_time_seconds",
            "The configured service_down_time: a service is down after this long without a heartbeat",
            service_down_time,
        );
        registry.register(
            "vigil_build",
            "Version of this server",
            Info::new(VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let hot = HotSeries {
            routes: [HEARTBEAT_ROUTE, BATCH_ROUTE]
                .into_iter()
                .map(|route| {
                    let labels = HttpLabels {
                        route,
                        method: "POST",
                        status: 200,
                    };
                    let ok = (route == HEARTBEAT_ROUTE).then(|| {
                        heartbeats
                            .get_or_create(&OutcomeLabels { outcome: "ok" })
                            .clone()
                    });
                    (
                        route,
                        request_duration.get_or_create(&labels).clone(),
                        requests.get_or_create(&labels).clone(),
                        ok,
                    )
                })
                .collect(),
            http1: protocol_series(&protocols, "HTTP/1.1"),
            http2: protocol_series(&protocols, "HTTP/2"),
        };
        Metrics {
            registry,
            heartbeats,
            lateness,
            flush_duration,
            flush_rows,
            flush_failures,
            detection_lag,
            events_written,
            streams,
            requests,
            request_duration,
            protocols,
            hot,
            per_service,
        }
    }

    /// One HTTP request answered: `route` is its template (`None`: no route matched).
    pub(crate) fn request(
        &self,
        route: &'static str,
        method: &'static str,
        status: u16,
        took: Duration,
    ) {
        if status == 200 && method == "POST" {
            if let Some((_, duration, requests, ok)) =
                self.hot.routes.iter().find(|(hot, ..)| *hot == route)
            {
                duration.observe(took.as_secs_f64());
                requests.inc();
                if let Some(ok) = ok {
                    ok.inc();
                }
                return;
            }
        }
        let labels = HttpLabels {
            route,
            method,
            status,
        };
        self.request_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.requests.get_or_create(&labels).inc();
        if route == HEARTBEAT_ROUTE && method == "POST" {
            let outcome = match status {
                200..=299 => "ok",
                404 => "not_found",
                400..=499 => "invalid",
                _ => "error",
            };
            self.heartbeats
                .get_or_create(&OutcomeLabels { outcome })
                .inc();
        }
    }

    /// One HTTP request received over `version` of the protocol.
    pub(crate) fn protocol(&self, version: axum::http::Version) {
        let hot = match version {
            axum::http::Version::HTTP_11 => Some(&self.hot.http1),
            axum::http::Version::HTTP_2 => Some(&self.hot.http2),
            _ => None,
        };
        if let Some(counter) = hot {
            counter.inc();
            return;
        }
        let protocol = match version {
            axum::http::Version::HTTP_09 => "HTTP/0.9",
            axum::http::Version::HTTP_10 => "HTTP/1.0",
            axum::http::Version::HTTP_11 => "HTTP/1.1",
            axum::http::Version::HTTP_2 => "HTTP/2",
            axum::http::Version::HTTP_3 => "HTTP/3",
            _ => "other",
        };
        self.protocols
            .get_or_create(&ProtocolLabels { protocol })
            .inc();
    }

    /// A heartbeat applied: `lateness_s` is its gap minus the service's `report_interval`
    /// (`None` for a service's first heartbeat).
    pub(crate) fn beat(&self, lateness_s: Option<f64>) {
        if let Some(lateness) = lateness_s.filter(|l| l.is_finite()) {
            self.lateness.observe(lateness);
        }
    }

    /// One flush's outcome and duration (its rows are counted as each transaction commits,
    /// [`Metrics::rows_flushed`], so that a flush failing part-way counts what it wrote).
    pub(crate) fn flushed<T, E>(&self, outcome: &Result<T, E>, took: Duration) {
        self.flush_duration.observe(took.as_secs_f64());
        if outcome.is_err() {
            self.flush_failures.inc();
        }
    }

    /// Heartbeat rows committed by one transaction of a flush.
    pub(crate) fn rows_flushed(&self, rows: usize) {
        self.flush_rows.inc_by(rows as u64);
    }

    /// Heartbeat rows committed by flushes since start.
    #[cfg(test)]
    pub(crate) fn flushed_rows(&self) -> u64 {
        self.flush_rows.get()
    }

    /// The detector declared a service down `lag` after its deadline.
    pub(crate) fn detected(&self, lag: chrono::TimeDelta) {
        self.detection_lag.observe(seconds(lag).max(0.0));
    }

    /// Events committed to the history by this server.
    pub(crate) fn written(&self, kinds: impl IntoIterator<Item = EventKind>) {
        for kind in kinds {
            self.events_written
                .get_or_create(&KindLabels {
                    kind: kind.as_str(),
                })
                .inc();
        }
    }

    /// An open SSE stream: counted until the guard drops.
    pub(crate) fn stream(&self) -> StreamGuard {
        self.streams.inc();
        StreamGuard(self.streams.clone())
    }

    /// The whole exposition at this moment: the server's own metrics, then the fleet's
    /// (`registry` at `now`; `leader` and `database_errors` read by the caller).
    pub(crate) fn encode(
        &self,
        registry: &crate::registry::Registry,
        now: chrono::DateTime<chrono::Utc>,
        leader: bool,
        database_errors: u64,
        openmetrics: bool,
    ) -> Result<String, std::fmt::Error> {
        let mut scrape = Registry::default();
        scrape.register_collector(Box::new(Snapshot {
            rows: Snapshot::rows(registry, now, self.per_service),
            per_service: self.per_service,
            leader,
            database_errors,
        }));
        scrape.register_collector(Box::new(MaintenanceWindows(
            registry.maintenance.active_count(now),
        )));
        let mut text = String::new();
        if openmetrics {
            prometheus_client::encoding::text::encode_registry(&mut text, &self.registry)?;
            prometheus_client::encoding::text::encode_registry(&mut text, &scrape)?;
            prometheus_client::encoding::text::encode_eof(&mut text)?;
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
            prometheus_client::encoding::prometheus_text::encode(&mut text, &scrape)?;
        }
        Ok(text)
    }
}

/// Keeps an SSE stream counted in `vigil_sse_streams` while it lives.
pub(crate) struct StreamGuard(Gauge);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One service as a scrape sees it: copied under its lock, encoded after.
#[derive(Debug)]
struct ServiceRow {
    host: CompactString,
    binary: crate::model::Symbol,
    zone: crate::model::Symbol,
    /// `vigil`, or the watch's name.
    source: CompactString,
    state: vigil_proto::State,
    disabled: bool,
    last_heartbeat: Option<f64>,
    report_count: i64,
    clock_offset: Option<f64>,
    phi: Option<f64>,
    /// 0 ok, 1 warning, 2 failing; `None` when none was reported.
    health: Option<i64>,
    flapping: bool,
    /// A maintenance window covers it.
    in_maintenance: bool,
}

/// The maintenance windows that hold at a scrape.
#[derive(Debug)]
struct MaintenanceWindows(usize);

impl Collector for MaintenanceWindows {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        ConstGauge::new(self.0 as i64).encode(encoder.encode_descriptor(
            "vigil_maintenance_windows",
            "Maintenance windows that hold now (started, not ended early, not past their end)",
            None,
            ConstGauge::<i64>::TYPE,
        )?)
    }
}

/// What the fleet looked like at one scrape, and the server's state read at the same time.
#[derive(Debug)]
struct Snapshot {
    rows: Vec<ServiceRow>,
    per_service: bool,
    leader: bool,
    database_errors: u64,
}

impl Snapshot {
    /// Each service under its own lock, briefly, as a list does.
    fn rows(
        registry: &crate::registry::Registry,
        now: chrono::DateTime<chrono::Utc>,
        per_service: bool,
    ) -> Vec<ServiceRow> {
        registry
            .entries()
            .iter()
            .filter_map(|entry| {
                let slot = entry.lock();
                if slot.deleted {
                    return None;
                }
                let record = &slot.record;
                let judgement = registry.judge(&slot, now);
                Some(ServiceRow {
                    host: record.host.clone(),
                    binary: record.binary.clone(),
                    zone: record.zone.clone(),
                    source: crate::registry::source(&slot).into(),
                    state: judgement.state(),
                    disabled: record.disabled,
                    last_heartbeat: record.updated_at.map(|t| t.timestamp_micros() as f64 / 1e6),
                    report_count: record.report_count,
                    clock_offset: slot.stats.clock_offset_s(),
                    phi: per_service.then_some(judgement.suspicion).flatten(),
                    health: record.health.map(|h| match h {
                        crate::model::Health::Ok => 0,
                        crate::model::Health::Warning => 1,
                        crate::model::Health::Failing => 2,
                    }),
                    flapping: slot.flaps.flapping(now, &registry.liveness.flapping),
                    in_maintenance: judgement.in_maintenance,
                })
            })
            .collect()
    }
}

/// Encodes one labelled constant series per item of `rows` that `value` gives a value for.
fn per_service_gauge<T: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[ServiceRow],
    value: impl Fn(&ServiceRow) -> Option<T>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, ConstGauge::<i64>::TYPE)?;
    for row in rows {
        if let Some(v) = value(row) {
            let labels = [
                ("host", row.host.as_str()),
                ("binary", row.binary.as_str()),
                ("zone", row.zone.as_str()),
                ("source", row.source.as_str()),
            ];
            ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Counts by (state, status) of every (zone, source) present, so that a count that drops
        // to zero shows 0 rather than vanishing.
        const STATES: [vigil_proto::State; 5] = [
            vigil_proto::State::Down,
            vigil_proto::State::Up,
            vigil_proto::State::Unknown,
            vigil_proto::State::Stopped,
            vigil_proto::State::Unreachable,
        ];
        let mut counts: std::collections::BTreeMap<(&str, &str), [[u64; 2]; 5]> =
            Default::default();
        for row in &self.rows {
            let state = STATES.iter().position(|s| *s == row.state).unwrap_or(0);
            counts
                .entry((row.zone.as_str(), row.source.as_str()))
                .or_default()[state][usize::from(row.disabled)] += 1;
        }
        {
            let mut fleet = encoder.encode_descriptor(
                "vigil_services",
                "Services known to this server, by state (up, down, stopped, unreachable; unknown for watched services), status (enabled, disabled), zone and source",
                None,
                ConstGauge::<i64>::TYPE,
            )?;
            for ((zone, source), by_state) in &counts {
                for (state, by_status) in by_state.iter().enumerate() {
                    // Only watched services can be unknown, and only Vigil's own stopped: no
                    // zeros of those for the rest.
                    let own = *source == vigil_proto::VIGIL_SOURCE;
                    if (STATES[state] == vigil_proto::State::Unknown && own)
                        || (matches!(
                            STATES[state],
                            vigil_proto::State::Stopped | vigil_proto::State::Unreachable
                        ) && !own)
                    {
                        continue;
                    }
                    for (disabled, count) in by_status.iter().enumerate() {
                        let labels = [
                            ("state", STATES[state].as_str()),
                            ("status", if disabled == 1 { "disabled" } else { "enabled" }),
                            ("zone", zone),
                            ("source", source),
                        ];
                        ConstGauge::new(*count as i64).encode(fleet.encode_family(&labels)?)?;
                    }
                }
            }
        }
        ConstGauge::new(i64::from(self.leader)).encode(encoder.encode_descriptor(
            "vigil_detection_leader",
            "1 when this replica leads detection (writes down, up and suspect events), else 0",
            None,
            ConstGauge::<i64>::TYPE,
        )?)?;
        ConstCounter::new(self.database_errors).encode(encoder.encode_descriptor(
            "vigil_database_errors",
            "Database writes and probes that failed",
            None,
            ConstCounter::<u64>::TYPE,
        )?)?;
        if !self.per_service {
            return Ok(());
        }
        let rows = &self.rows;
        per_service_gauge(
            &mut encoder,
            "vigil_service_up",
            "1 when the service is up (its last heartbeat, by this server's clock, is at most service_down_time old and it is not forced down), else 0",
            rows,
            // A watched service whose database cannot be read is neither, and one that stopped
            // cleanly is not a failure: no sample, so `VigilServiceDown` does not fire.
            |r| match r.state {
                vigil_proto::State::Up => Some(1),
                vigil_proto::State::Down => Some(0),
                // Held by the partition guard: not known down either.
                vigil_proto::State::Unknown
                | vigil_proto::State::Stopped
                | vigil_proto::State::Unreachable => None,
            },
        )?;
        per_service_gauge(
            &mut encoder,
            "vigil_service_last_heartbeat_timestamp_seconds",
            "When this server last received a heartbeat of the service (Unix time); absent before the first",
            rows,
            |r| r.last_heartbeat,
        )?;
        per_service_gauge(
            &mut encoder,
            "vigil_service_report_count",
            "Heartbeats of the service counted since it registered (Cinder's report_count)",
            rows,
            |r| Some(r.report_count),
        )?;
        per_service_gauge(
            &mut encoder,
            "vigil_service_clock_offset_seconds",
            "The service host's clock minus this server's, as measured from heartbeats' sent_at; absent until measured",
            rows,
            |r| r.clock_offset,
        )?;
        per_service_gauge(
            &mut encoder,
            "vigil_service_suspicion_phi",
            "Phi-accrual suspicion of the service from its recent heartbeat gaps; absent until three gaps are known",
            rows,
            |r| r.phi,
        )?;
        per_service_gauge(
            &mut encoder,
            "vigil_service_health",
            "The health the service's heartbeats last reported: 0 ok, 1 warning, 2 failing; absent when none did",
            rows,
            |r| r.health,
        )?;
        per_service_gauge(
            &mut encoder,
            "vigil_service_flapping",
            "1 when the service went up and down at least flapping.transitions times within flapping.window, else 0",
            rows,
            |r| Some(i64::from(r.flapping)),
        )?;
        per_service_gauge(
            &mut encoder,
            "vigil_service_in_maintenance",
            "1 when a maintenance window covers the service (it is judged all the same); no sample otherwise, so alert rules can silence by it",
            rows,
            |r| r.in_maintenance.then_some(1),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_metrics_encode_in_both_formats() {
        let metrics = Metrics::new(true, 60.0);
        metrics.request(
            route_label(Some(HEARTBEAT_ROUTE)),
            "POST",
            200,
            Duration::from_millis(1),
        );
        metrics.request(
            route_label(Some(HEARTBEAT_ROUTE)),
            "POST",
            404,
            Duration::from_millis(1),
        );
        metrics.request(route_label(None), "GET", 404, Duration::from_millis(1));
        metrics.rows_flushed(3);
        metrics.flushed::<(), ()>(&Ok(()), Duration::from_millis(2));
        metrics.flushed::<(), ()>(&Err(()), Duration::from_millis(2));
        metrics.written([EventKind::Down, EventKind::Down]);
        let guard = metrics.stream();
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &metrics.registry).unwrap();
        for line in [
            "vigil_heartbeats_received_total{outcome=\"ok\"} 1",
            "vigil_heartbeats_received_total{outcome=\"not_found\"} 1",
            "vigil_flush_rows_total 3",
            "vigil_flush_failures_total 1",
            "vigil_events_written_total{kind=\"down\"} 2",
            "vigil_sse_streams 1",
            "vigil_service_down_time_seconds 60.0",
            "vigil_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        assert!(text.contains("vigil_build_info{version=\""), "{text}");
        drop(guard);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        assert!(text.lines().any(|l| l == "vigil_sse_streams 0"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    fn record(id: i64, now: chrono::DateTime<chrono::Utc>) -> crate::model::ServiceRecord {
        crate::model::ServiceRecord {
            zone: if id % 2 == 0 { "az1" } else { "az2" }.into(),
            disabled: id % 5 == 0,
            report_count: id,
            // Every third service last beat 2 minutes ago: down.
            updated_at: Some(if id % 3 == 0 {
                now - chrono::TimeDelta::seconds(120)
            } else {
                now
            }),
            ..crate::model::ServiceRecord::example(
                id,
                &format!("node-{}", id / 10),
                &format!("binary-{}", id % 10),
                10.0,
                now - chrono::TimeDelta::seconds(600),
            )
        }
    }

    /// A large fleet scrapes whole and right: one series per service and family, counts that
    /// add up, in both formats. (Sized to stay quick in a debug build; nothing in the encoding
    /// depends on the size.)
    #[test]
    fn a_large_fleet_is_scraped_whole() {
        const FLEET: i64 = 20_000;
        let now = chrono::Utc::now();
        let registry = crate::registry::Registry::new(
            (1..=FLEET).map(|id| record(id, now)).collect(),
            crate::liveness::Liveness::new(60.0, 8.0),
        );
        for openmetrics in [false, true] {
            let snapshot = Snapshot {
                rows: Snapshot::rows(&registry, now, true),
                per_service: true,
                leader: true,
                database_errors: 0,
            };
            let mut scrape = Registry::default();
            scrape.register_collector(Box::new(snapshot));
            let mut text = String::new();
            if openmetrics {
                prometheus_client::encoding::text::encode(&mut text, &scrape).unwrap();
            } else {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &scrape).unwrap();
            }
            let series = |name: &str| {
                text.lines()
                    .filter(|l| l.starts_with(&format!("{name}{{")))
                    .count() as i64
            };
            assert_eq!(series("vigil_service_up"), FLEET);
            assert_eq!(series("vigil_service_report_count"), FLEET);
            assert_eq!(
                series("vigil_service_last_heartbeat_timestamp_seconds"),
                FLEET
            );
            let down = text
                .lines()
                .filter(|l| l.starts_with("vigil_service_up{") && l.ends_with(" 0"))
                .count() as i64;
            assert_eq!(down, FLEET / 3);
            let total: i64 = text
                .lines()
                .filter(|l| l.starts_with("vigil_services{"))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap())
                .sum();
            assert_eq!(total, FLEET);
            assert!(
                text.contains("vigil_service_up{host=\"node-1\",binary=\"binary-1\",zone=\"az2\",source=\"vigil\"} 1"),
                "{}",
                &text[..2000]
            );
        }
    }
}
