//! Ingest: heartbeats as fast as `--connections` keep-alive connections send them, one beat
//! per request, first against the reference endpoint and then against Vigil, on the same
//! server process. The ratio of the two is what the registry, the detector's bookkeeping and
//! the batched database writes cost on top of HTTP and JSON.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::child::{zone_of, BenchDb, ServerChild, ServerOptions};
use super::http::{Conn, Histogram};
use super::{count, human, nanos, BenchArgs, Row};

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

/// What one load phase measured.
pub struct Load {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency: Histogram,
    /// Server CPU time (user + system) over the phase.
    pub cpu: Duration,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub fn cpu_per_request(&self) -> Duration {
        self.cpu.div_f64(self.ok.max(1) as f64)
    }
}

/// Sends heartbeats to `path(id)` on `connections` connections for `duration`, each connection
/// cycling through its own share of services `1..=services`.
pub async fn closed_loop(
    server: &ServerChild,
    prefix: &'static str,
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
            let mut ok = 0u64;
            let mut path = String::with_capacity(64);
            let mut body = Vec::with_capacity(160);
            let mut next = c;
            while !stop.load(Ordering::Relaxed) {
                let id = (next % services) as i64 + 1;
                next += connections;
                path.clear();
                let _ = write!(path, "{prefix}{id}/heartbeat");
                beat_body(id, &mut body);
                let sent = Instant::now();
                match conn.post_json(&path, &body).await {
                    Ok(200) => {
                        latency.record(sent.elapsed().as_nanos() as u64);
                        ok += 1;
                    }
                    Ok(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        match Conn::connect(addr).await {
                            Ok(fresh) => conn = fresh,
                            Err(_) => break,
                        }
                    }
                }
            }
            (ok, latency)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latency = Histogram::default();
    let mut ok = 0;
    for task in tasks {
        let (n, histogram) = task.await?;
        ok += n;
        latency.merge(&histogram);
    }
    let elapsed = started.elapsed();
    let cpu = server.cpu_time()?.saturating_sub(cpu_before);
    Ok(Load {
        ok,
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latency,
        cpu,
    })
}

pub async fn run(args: &BenchArgs, database: Option<&str>) -> anyhow::Result<Vec<Row>> {
    let db = BenchDb::create(database).await?;
    eprintln!("ingest: inserting {} services", count(args.services as u64));
    db.populate(args.services).await?;
    let server = ServerChild::start(
        &db,
        ServerOptions {
            service_down_time: 60.0,
            flush_interval: args.flush_interval,
            bench_reference: true,
        },
    )
    .await?;
    let duration = Duration::from_secs_f64(args.duration);
    let warm_up = Duration::from_secs(1);
    let phase = |prefix: &'static str| {
        let server = &server;
        async move {
            closed_loop(server, prefix, args.services, args.connections, warm_up).await?;
            closed_loop(server, prefix, args.services, args.connections, duration).await
        }
    };
    eprintln!(
        "ingest: {} connections, {} s against the reference endpoint, then {} s against vigil",
        args.connections, args.duration, args.duration
    );
    let reference = phase("/v1/bench/reference/").await?;
    let vigil = phase("/v1/services/").await?;
    server.stop().await;
    db.remove().await;

    let label = format!(
        "ingest ({} services, {} conns)",
        count(args.services as u64),
        args.connections
    );
    let rate_ratio = vigil.rate() / reference.rate().max(1e-9);
    let cpu_ratio = vigil.cpu_per_request().as_secs_f64()
        / reference.cpu_per_request().as_secs_f64().max(1e-12);
    let vigil_cpu = vigil.cpu_per_request();
    let mut rows = vec![
        Row::info(
            &label,
            "heartbeats/s (vigil / reference)",
            format!(
                "{} / {}",
                count(vigil.rate() as u64),
                count(reference.rate() as u64)
            ),
        ),
        Row::info(&label, "beats/s ratio", format!("{rate_ratio:.2} x"))
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
            "ack latency p50 / p99 (reference)",
            format!(
                "{} / {}",
                nanos(reference.latency.quantile(0.5)),
                nanos(reference.latency.quantile(0.99))
            ),
        ),
        Row::info(&label, "server CPU per heartbeat", human(vigil_cpu))
            .target("<= 10 us", vigil_cpu <= Duration::from_micros(10)),
        Row::info(
            &label,
            "server CPU per reference request",
            human(reference.cpu_per_request()),
        ),
        Row::info(
            &label,
            "CPU ratio vigil / reference",
            format!("{cpu_ratio:.2} x"),
        )
        .target("<= 1.25 x", cpu_ratio <= 1.25),
    ];
    if vigil.errors + reference.errors > 0 {
        rows.push(Row::info(
            &label,
            "failed requests (vigil / reference)",
            format!("{} / {}", vigil.errors, reference.errors),
        ));
    }
    Ok(rows)
}
