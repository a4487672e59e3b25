//! Ingest and batch: heartbeats as fast as `--connections` keep-alive connections send them.
//!
//! - `ingest`: one beat per request against three endpoints of the same server process: the
//!   bare endpoint (axum alone: no Vigil middleware, no registry), the reference endpoint
//!   (Vigil's middleware and extractors, no registry) and Vigil's heartbeat. The phases
//!   alternate (bare, reference, vigil, vigil, reference, bare; half the duration each), so a
//!   drift of the machine's speed during the run weighs on all three alike.
//! - `batch`: `POST /v1/heartbeats` carrying `--batch-sizes` beats per request; beats/s and the
//!   server's CPU per beat.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::child::{zone_of, BenchDb, ServerChild, ServerOptions};
use super::http::{Conn, Histogram};
use super::{count, human, nanos, BenchArgs, Row, Scenario};

/// The body a reporter sends (see `vigil-reporter`), for service `id`, sent now.
pub fn beat_body(id: i64, body: &mut Vec<u8>) {
    use std::io::Write as _;
    body.clear();
    let _ = write!(
        body,
        r#"{{"zone":"{}","sent_at":"{}","last_rtt_s":0.0012,"overrun_s":0.0}}"#,
        zone_of(id),
        vigil_proto::ts::format(&chrono::Utc::now())
    );
}

/// The body a `ReporterGroup` sends for services `ids`, sent now: each beat is a single
/// heartbeat's body plus the service's id.
pub fn batch_body(ids: impl IntoIterator<Item = i64>, body: &mut Vec<u8>) {
    use std::io::Write as _;
    let sent_at = vigil_proto::ts::format(&chrono::Utc::now());
    body.clear();
    body.extend_from_slice(br#"{"beats":["#);
    for (i, id) in ids.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let _ = write!(
            body,
            r#"{{"id":{id},"zone":"{}","sent_at":"{sent_at}","last_rtt_s":0.0012,"overrun_s":0.0}}"#,
            zone_of(id),
        );
    }
    body.extend_from_slice(b"]}");
}

/// Beats of a batch's answer that carry an error (`"error":` appears once per failed beat).
pub fn failed_in_answer(answer: &[u8]) -> u64 {
    answer.windows(8).filter(|w| w == b"\"error\":").count() as u64
}

/// What one load phase measured.
#[derive(Default)]
pub struct Load {
    /// Beats acknowledged (one per request for single heartbeats).
    pub ok: u64,
    /// Requests answered 200.
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency: Histogram,
    /// Server CPU time (user + system) over the phase.
    pub cpu: Duration,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn cpu_per_request(&self) -> Duration {
        self.cpu.div_f64(self.ok.max(1) as f64)
    }

    /// Two phases of the same load, as one.
    pub fn merge(&mut self, other: Load) {
        self.ok += other.ok;
        self.requests += other.requests;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.latency.merge(&other.latency);
        self.cpu += other.cpu;
    }
}

/// What each request carries.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// One beat to `{prefix}{id}/heartbeat`.
    Single(&'static str),
    /// `POST /v1/heartbeats` with this many beats.
    Batch(usize),
}

/// Sends heartbeats on `connections` connections for `duration`, each connection cycling
/// through its own share of services `1..=services`.
pub async fn closed_loop(
    server: &ServerChild,
    target: Target,
    services: usize,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Load> {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu_before = server.cpu_time()?;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for c in 0..connections {
        let stop = stop.clone();
        let errors = errors.clone();
        let addr = server.addr;
        let mut conn = Conn::connect(server.addr)
            .await
            .context("cannot connect to the server")?;
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::default();
            let (mut ok, mut requests) = (0u64, 0u64);
            let mut path = String::with_capacity(64);
            let mut body = Vec::with_capacity(160);
            let mut answer = Vec::new();
            let mut next = c;
            let mut ids = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let beats = match target {
                    Target::Single(prefix) => {
                        let id = (next % services) as i64 + 1;
                        next += connections;
                        path.clear();
                        let _ = write!(path, "{prefix}{id}/heartbeat");
                        beat_body(id, &mut body);
                        1
                    }
                    Target::Batch(size) => {
                        ids.clear();
                        for _ in 0..size {
                            ids.push((next % services) as i64 + 1);
                            next += connections;
                        }
                        path.clear();
                        path.push_str("/v1/heartbeats");
                        batch_body(ids.iter().copied(), &mut body);
                        size as u64
                    }
                };
                let sent = Instant::now();
                let result = match target {
                    Target::Single(_) => conn.post_json(&path, &body).await,
                    Target::Batch(_) => conn.post_json_answer(&path, &body, &mut answer).await,
                };
                match result {
                    Ok(200) => {
                        latency.record(sent.elapsed().as_nanos() as u64);
                        let failed = match target {
                            Target::Single(_) => 0,
                            Target::Batch(_) => failed_in_answer(&answer),
                        };
                        ok += beats - failed;
                        requests += 1;
                        if failed > 0 {
                            errors.fetch_add(failed, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {
                        errors.fetch_add(beats, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(beats, Ordering::Relaxed);
                        match Conn::connect(addr).await {
                            Ok(fresh) => conn = fresh,
                            Err(_) => break,
                        }
                    }
                }
            }
            (ok, requests, latency)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut load = Load::default();
    for task in tasks {
        let (ok, requests, histogram) = task.await?;
        load.ok += ok;
        load.requests += requests;
        load.latency.merge(&histogram);
    }
    load.elapsed = started.elapsed();
    load.cpu = server.cpu_time()?.saturating_sub(cpu_before);
    load.errors = errors.load(Ordering::Relaxed);
    Ok(load)
}

pub async fn run(args: &BenchArgs, database: Option<&str>) -> anyhow::Result<Vec<Row>> {
    let has = |s: Scenario| args.scenario.contains(&s);
    let db = BenchDb::create(database).await?;
    eprintln!("ingest: inserting {} services", count(args.services as u64));
    db.populate(args.services).await?;
    let server = ServerChild::start(
        &db,
        ServerOptions {
            service_down_time: 60.0,
            flush_interval: args.flush_interval,
            bench_reference: true,
            metrics_per_service: true,
            cinder: false,
        },
    )
    .await?;
    let result = async {
        let mut rows = Vec::new();
        if has(Scenario::Ingest) {
            rows.extend(single(args, &server).await?);
        }
        if has(Scenario::Batch) {
            rows.extend(batch(args, &server).await?);
        }
        if has(Scenario::Protocol) {
            rows.extend(super::protocol::run(args, &server).await?);
        }
        anyhow::Ok(rows)
    }
    .await;
    server.stop().await;
    db.remove().await;
    result
}

/// Warm-up, then `duration` of `target`.
async fn phase(
    args: &BenchArgs,
    server: &ServerChild,
    target: Target,
    duration: Duration,
) -> anyhow::Result<Load> {
    let warm_up = Duration::from_secs_f64(1f64.min(args.duration));
    closed_loop(server, target, args.services, args.connections, warm_up).await?;
    closed_loop(server, target, args.services, args.connections, duration).await
}

async fn single(args: &BenchArgs, server: &ServerChild) -> anyhow::Result<Vec<Row>> {
    const BARE: Target = Target::Single("/v1/bench/bare/");
    const REFERENCE: Target = Target::Single("/v1/bench/reference/");
    const VIGIL: Target = Target::Single("/v1/services/");
    eprintln!(
        "ingest: {} connections, {} s each against the bare endpoint, the reference endpoint and vigil, alternately",
        args.connections, args.duration
    );
    let half = Duration::from_secs_f64(args.duration / 2.0);
    let (mut bare, mut reference, mut vigil) = (Load::default(), Load::default(), Load::default());
    for (target, load) in [
        (BARE, &mut bare),
        (REFERENCE, &mut reference),
        (VIGIL, &mut vigil),
    ] {
        load.merge(phase(args, server, target, half).await?);
    }
    for (target, load) in [
        (VIGIL, &mut vigil),
        (REFERENCE, &mut reference),
        (BARE, &mut bare),
    ] {
        load.merge(phase(args, server, target, half).await?);
    }

    let label = format!(
        "ingest ({} services, {} conns)",
        count(args.services as u64),
        args.connections
    );
    let rate_ratio = vigil.rate() / reference.rate().max(1e-9);
    let bare_ratio = vigil.rate() / bare.rate().max(1e-9);
    let cpu_ratio = vigil.cpu_per_request().as_secs_f64()
        / reference.cpu_per_request().as_secs_f64().max(1e-12);
    let bare_cpu_ratio =
        vigil.cpu_per_request().as_secs_f64() / bare.cpu_per_request().as_secs_f64().max(1e-12);
    let vigil_cpu = vigil.cpu_per_request();
    let mut rows = vec![
        Row::info(
            &label,
            "heartbeats/s (vigil / reference / bare)",
            format!(
                "{} / {} / {}",
                count(vigil.rate() as u64),
                count(reference.rate() as u64),
                count(bare.rate() as u64)
            ),
        ),
        Row::info(
            &label,
            "beats/s ratio vigil / bare",
            format!("{bare_ratio:.2} x"),
        )
        .target(">= 0.9 x", bare_ratio >= 0.9),
        Row::info(
            &label,
            "beats/s ratio vigil / reference",
            format!("{rate_ratio:.2} x"),
        )
        .target(">= 0.8 x", rate_ratio >= 0.8),
        Row::info(
            &label,
            "ack latency p50 / p99 (vigil)",
            format!(
                "{} / {}",
                nanos(vigil.latency.quantile(0.5)),
                nanos(vigil.latency.quantile(0.99))
            ),
        ),
        Row::info(
            &label,
            "ack latency p50 / p99 (bare)",
            format!(
                "{} / {}",
                nanos(bare.latency.quantile(0.5)),
                nanos(bare.latency.quantile(0.99))
            ),
        ),
        Row::info(&label, "server CPU per heartbeat", human(vigil_cpu))
            .target("<= 10 us", vigil_cpu <= Duration::from_micros(10)),
        Row::info(
            &label,
            "server CPU per request (reference / bare)",
            format!(
                "{} / {}",
                human(reference.cpu_per_request()),
                human(bare.cpu_per_request())
            ),
        ),
        Row::info(
            &label,
            "CPU ratio vigil / reference",
            format!("{cpu_ratio:.2} x"),
        )
        .target("<= 1.25 x", cpu_ratio <= 1.25),
        Row::info(
            &label,
            "CPU ratio vigil / bare",
            format!("{bare_cpu_ratio:.2} x"),
        ),
    ];
    if vigil.errors + reference.errors + bare.errors > 0 {
        rows.push(Row::info(
            &label,
            "failed requests (vigil / reference / bare)",
            format!("{} / {} / {}", vigil.errors, reference.errors, bare.errors),
        ));
    }
    Ok(rows)
}

async fn batch(args: &BenchArgs, server: &ServerChild) -> anyhow::Result<Vec<Row>> {
    let duration = Duration::from_secs_f64(args.duration);
    let mut rows = Vec::new();
    for &size in &args.batch_sizes {
        let size = size.clamp(1, vigil_proto::MAX_BATCH_BEATS);
        eprintln!(
            "batch: {} connections, {size} beats per request, {} s",
            args.connections, args.duration
        );
        let load = phase(args, server, Target::Batch(size), duration).await?;
        let label = format!(
            "batch ({size} beats per request, {} services, {} conns)",
            count(args.services as u64),
            args.connections
        );
        let per_beat = load.cpu_per_request();
        let row = Row::info(
            &label,
            "beats/s (requests/s); server CPU per beat",
            format!(
                "{} ({}); {}",
                count(load.rate() as u64),
                count((load.requests as f64 / load.elapsed.as_secs_f64().max(1e-9)) as u64),
                human(per_beat)
            ),
        );
        rows.push(if size == 100 {
            row.target("<= 1 us per beat", per_beat <= Duration::from_micros(1))
        } else {
            row
        });
        rows.push(Row::info(
            &label,
            "request latency p50 / p99; server cores busy",
            format!(
                "{} / {}; {:.2}",
                nanos(load.latency.quantile(0.5)),
                nanos(load.latency.quantile(0.99)),
                load.cpu.as_secs_f64() / load.elapsed.as_secs_f64().max(1e-9)
            ),
        ));
        if load.errors > 0 {
            rows.push(Row::info(&label, "failed beats", count(load.errors)));
        }
    }
    Ok(rows)
}
