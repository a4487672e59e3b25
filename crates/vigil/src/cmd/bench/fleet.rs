//! Detection, memory and restart, on one fleet of `--fleet` services.
//!
//! Every service beats once per `--report-interval`, on a schedule spread evenly over the
//! interval (an open-loop load: a late request does not delay the schedule, it shows up as
//! lag). After the first full round, the `--victims` stop. Each one's deadline is its last
//! heartbeat's receipt time plus `service_down_time`, both as the server reports them in the
//! `down` event; its delay is from that deadline to the moment this process reads the event
//! from `GET /v1/events/stream`. The server's RSS is sampled throughout. Then the server is
//! stopped, and started again on the same database to time its way to `/readyz` = 200.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;
use vigil_proto::Event;

use super::child::{BenchDb, ServerChild, ServerOptions};
use super::http::{Conn, Histogram};
use super::ingest::{batch_body, beat_body, failed_in_answer};
use super::{count, human, nanos, BenchArgs, Row, Scenario};

/// Time given after the last deadline for stragglers before the detection phase gives up.
const DETECTION_SLACK: Duration = Duration::from_secs(15);

pub async fn run(args: &BenchArgs, database: Option<&str>) -> anyhow::Result<Vec<Row>> {
    let has = |s: Scenario| args.scenario.contains(&s);
    let db = BenchDb::create(database).await?;
    eprintln!("fleet: inserting {} services", count(args.fleet as u64));
    let inserted = db.populate(args.fleet).await?;
    eprintln!("fleet: inserted in {}", human(inserted));
    let mut rows = Vec::new();
    if has(Scenario::Detection) || has(Scenario::Memory) {
        let server = ServerChild::start(
            &db,
            ServerOptions {
                service_down_time: args.service_down_time,
                flush_interval: args.flush_interval,
                bench_reference: false,
                metrics_per_service: false,
                cinder: false,
            },
        )
        .await?;
        let result = watch(args, &server, has(Scenario::Detection)).await;
        server.stop().await;
        rows.extend(result?);
    }
    if has(Scenario::Restart) {
        rows.extend(restart(args, &db, database.is_none()).await?);
    }
    db.remove().await;
    Ok(rows)
}

/// Which services stop: `victims` of them, evenly spread over the ids.
struct Victims {
    count: usize,
    stride: usize,
}

impl Victims {
    fn contains(&self, id: u64) -> bool {
        let i = (id - 1) as usize;
        self.count > 0 && i.is_multiple_of(self.stride) && i / self.stride < self.count
    }
}

/// Down events as this process received them.
type Downs = Arc<Mutex<Vec<(DateTime<Utc>, Event)>>>;

/// Reads `down` events from the server's SSE stream into `downs` until the stream ends.
async fn follow_downs(http: &reqwest::Client, url: &str, downs: Downs) -> anyhow::Result<()> {
    let response = http
        .get(format!("{url}/v1/events/stream?kind=down"))
        .send()
        .await
        .context("cannot open the event stream")?;
    if !response.status().is_success() {
        bail!("the event stream answered {}", response.status());
    }
    tokio::spawn(async move {
        let mut stream = response.bytes_stream();
        let mut pending = Vec::<u8>::new();
        while let Some(Ok(chunk)) = stream.next().await {
            let received = Utc::now();
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = pending.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                for line in text.lines() {
                    if let Some(data) = line.strip_prefix("data:") {
                        if let Ok(event) = serde_json::from_str::<Event>(data.trim_start()) {
                            if let Ok(mut downs) = downs.lock() {
                                downs.push((received, event));
                            }
                        }
                    }
                }
            }
        }
    });
    Ok(())
}

/// The paced fleet, the victims' detection, and the server's memory.
async fn watch(
    args: &BenchArgs,
    server: &ServerChild,
    detection: bool,
) -> anyhow::Result<Vec<Row>> {
    let services = args.fleet as u64;
    let rate = services as f64 / args.report_interval;
    let victims = Arc::new(Victims {
        count: if detection {
            args.victims.min(args.fleet / 2)
        } else {
            0
        },
        stride: (args.fleet / args.victims.max(1)).max(1),
    });
    let http = reqwest::Client::new();
    let downs: Downs = Arc::default();
    follow_downs(&http, &server.url(), downs.clone()).await?;

    eprintln!(
        "fleet: {} services beating every {} s ({} beats/s, {} per request) on {} connections; {} stop after the first round",
        count(services),
        args.report_interval,
        count(rate as u64),
        args.fleet_batch.clamp(1, vigil_proto::MAX_BATCH_BEATS),
        args.connections,
        victims.count
    );
    let batch = args.fleet_batch.clamp(1, vigil_proto::MAX_BATCH_BEATS) as u64;
    let flushed_before = flushes(&http, &server.url()).await?;
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let cpu_before = server.cpu_time()?;
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let mut conn = Conn::connect(server.addr).await?;
        let (next, stop, errors, victims) =
            (next.clone(), stop.clone(), errors.clone(), victims.clone());
        tasks.push(tokio::spawn(async move {
            let mut lag = Histogram::default();
            let mut ok = 0u64;
            let mut path = String::new();
            let mut body = Vec::new();
            let mut answer = Vec::new();
            let mut ids = Vec::with_capacity(batch as usize);
            while !stop.load(Ordering::Relaxed) {
                // Schedule slots k..k + batch: one request, sent when the first is due.
                let k = next.fetch_add(batch, Ordering::Relaxed);
                ids.clear();
                ids.extend(
                    (k..k + batch)
                        .filter(|&slot| slot < services || !victims.contains(slot % services + 1))
                        .map(|slot| (slot % services + 1) as i64),
                );
                if ids.is_empty() {
                    continue;
                }
                let due = started + Duration::from_secs_f64(k as f64 / rate);
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep_until(due.into()).await;
                    lag.record(0);
                } else {
                    lag.record((now - due).as_nanos() as u64);
                }
                path.clear();
                let beats = ids.len() as u64;
                let result = if batch == 1 {
                    use std::fmt::Write as _;
                    let _ = write!(path, "/v1/services/{}/heartbeat", ids[0]);
                    beat_body(ids[0], &mut body);
                    conn.post_json(&path, &body).await.map(|status| (status, 0))
                } else {
                    path.push_str("/v1/heartbeats");
                    batch_body(ids.iter().copied(), &mut body);
                    conn.post_json_answer(&path, &body, &mut answer)
                        .await
                        .map(|status| (status, failed_in_answer(&answer)))
                };
                match result {
                    Ok((200, failed)) => {
                        ok += beats - failed;
                        errors.fetch_add(failed, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(beats, Ordering::Relaxed);
                    }
                }
            }
            (ok, lag)
        }));
    }

    let mut max_rss = 0u64;
    let mut first_round_done: Option<Instant> = None;
    let interval = Duration::from_secs_f64(args.report_interval);
    let down_time = Duration::from_secs_f64(args.service_down_time);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = Instant::now();
        if first_round_done.is_none() && next.load(Ordering::Relaxed) >= services {
            first_round_done = Some(now);
        }
        if first_round_done.is_some() {
            // Sampled once every service has beaten: the table and its stats are full size.
            max_rss = max_rss.max(server.rss()?);
        }
        let Some(round_done) = first_round_done else {
            if now - started > interval * 10 + down_time {
                bail!("the load generator did not finish one round of heartbeats");
            }
            continue;
        };
        if victims.count == 0 {
            if now - round_done >= interval {
                break;
            }
            continue;
        }
        let detected = downs
            .lock()
            .map(|d| {
                d.iter()
                    .filter(|(_, e)| victims.contains(e.service_id as u64))
                    .count()
            })
            .unwrap_or(0);
        if detected >= victims.count || now - round_done > down_time + DETECTION_SLACK {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let cpu = server.cpu_time()?.saturating_sub(cpu_before);
    let flushed = flushes(&http, &server.url()).await?;
    let mut beats = 0;
    let mut lag = Histogram::default();
    for task in tasks {
        let (ok, histogram) = task.await?;
        beats += ok;
        lag.merge(&histogram);
    }
    let achieved = beats as f64 / elapsed.as_secs_f64();

    let label = if batch == 1 {
        format!(
            "fleet ({} services, every {} s)",
            count(services),
            args.report_interval
        )
    } else {
        format!(
            "fleet ({} services, every {} s, {batch} per request)",
            count(services),
            args.report_interval
        )
    };
    let mut rows = vec![
        {
            let held = achieved / rate.max(1e-9);
            let row = Row::info(
                &label,
                "heartbeats/s achieved / scheduled",
                format!(
                    "{} / {} ({held:.3})",
                    count(achieved as u64),
                    count(rate as u64)
                ),
            );
            // The targets are for batched fleets: 0.99 up to a million, 0.95 beyond.
            match (batch > 1, services > 1_000_000) {
                (false, _) => row,
                (true, false) => row.target(">= 0.99", held >= 0.99),
                (true, true) => row.target(">= 0.95", held >= 0.95),
            }
        },
        Row::info(
            &label,
            "schedule lag p50 / p99 / max",
            format!(
                "{} / {} / {}",
                nanos(lag.quantile(0.5)),
                nanos(lag.quantile(0.99)),
                nanos(lag.max())
            ),
        ),
        Row::info(
            &label,
            "server CPU per heartbeat (cores busy)",
            format!(
                "{} ({:.2})",
                human(cpu.div_f64(beats.max(1) as f64)),
                cpu.as_secs_f64() / elapsed.as_secs_f64()
            ),
        ),
    ];
    let (rows_written, flush_time, flush_count) = (
        flushed.0 - flushed_before.0,
        flushed.1 - flushed_before.1,
        flushed.2 - flushed_before.2,
    );
    rows.push(Row::info(
        &label,
        "flushed: rows/s; flushes, mean duration (flush_interval)",
        format!(
            "{}; {}, {} ({} s)",
            count((rows_written / elapsed.as_secs_f64()) as u64),
            count(flush_count as u64),
            human(Duration::from_secs_f64(flush_time / flush_count.max(1.0))),
            args.flush_interval
        ),
    ));
    let failed = errors.load(Ordering::Relaxed);
    if failed > 0 {
        rows.push(Row::info(&label, "failed heartbeats", count(failed)));
    }
    if victims.count > 0 {
        let downs = downs.lock().map(|d| d.clone()).unwrap_or_default();
        let mut delay = Histogram::default();
        let mut detector = Histogram::default();
        let mut false_downs = 0u64;
        for (received, event) in &downs {
            if !victims.contains(event.service_id as u64) {
                false_downs += 1;
                continue;
            }
            let Some(deadline) = event.last_seen.map(|seen| {
                seen + TimeDelta::microseconds((event.threshold_s.unwrap_or(0.0) * 1e6) as i64)
            }) else {
                continue;
            };
            let nanos_after = |at: DateTime<Utc>| {
                (at - deadline).num_nanoseconds().unwrap_or(i64::MAX).max(0) as u64
            };
            delay.record(nanos_after(*received));
            detector.record(nanos_after(event.at));
        }
        let p99 = Duration::from_nanos(delay.quantile(0.99));
        let detection = format!(
            "detection ({} of {} stop, down after {} s)",
            count(victims.count as u64),
            count(services),
            args.service_down_time
        );
        rows.push(Row::info(
            &detection,
            "victims detected; other services declared down",
            format!(
                "{} of {}; {}",
                count(delay.count()),
                count(victims.count as u64),
                count(false_downs)
            ),
        ));
        rows.push(
            Row::info(
                &detection,
                "deadline to SSE event p50 / p99 / max",
                format!(
                    "{} / {} / {}",
                    nanos(delay.quantile(0.5)),
                    nanos(delay.quantile(0.99)),
                    nanos(delay.max())
                ),
            )
            .target(
                "p99 <= 1 s",
                p99 <= Duration::from_secs(1) && delay.count() == victims.count as u64,
            ),
        );
        rows.push(Row::info(
            &detection,
            "of which deadline to detector p50 / p99",
            format!(
                "{} / {}",
                nanos(detector.quantile(0.5)),
                nanos(detector.quantile(0.99))
            ),
        ));
    }
    let memory = Row::info(
        format!("memory ({} services heartbeating)", count(services)),
        "server RSS (max); per service",
        format!(
            "{:.0} MiB; {} B",
            max_rss as f64 / (1 << 20) as f64,
            count(max_rss / services.max(1))
        ),
    );
    // The targets are for a million and ten million services; below that the process's fixed
    // cost dominates.
    rows.push(if services >= 10_000_000 {
        memory.target("<= 4 GiB at 10M", max_rss <= 4 << 30)
    } else if services >= 1_000_000 {
        memory.target("<= 1 GiB at 1M", max_rss <= 1 << 30)
    } else {
        memory
    });
    Ok(rows)
}

/// Time from spawning the server to `/readyz` = 200, twice (the second with the database
/// file in the page cache, as after a quick restart).
async fn restart(args: &BenchArgs, db: &BenchDb, sqlite: bool) -> anyhow::Result<Vec<Row>> {
    let http = reqwest::Client::new();
    let mut times = Vec::new();
    for _ in 0..2 {
        let server = ServerChild::start(
            db,
            ServerOptions {
                service_down_time: args.service_down_time,
                flush_interval: args.flush_interval,
                bench_reference: false,
                metrics_per_service: false,
                cinder: false,
            },
        )
        .await?;
        let ready = server.wait_ready(&http).await?;
        times.push((ready, server.listening_after));
        server.stop().await;
    }
    let worst = times.iter().map(|t| t.0).max().unwrap_or_default();
    let row = Row::info(
        format!("restart ({} services)", count(args.fleet as u64)),
        "start to /readyz = 200, two runs (listening after)",
        times
            .iter()
            .map(|(ready, listening)| format!("{} ({})", human(*ready), human(*listening)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    Ok(vec![if sqlite && args.fleet >= 10_000_000 {
        row.target("<= 20 s at 10M (SQLite)", worst <= Duration::from_secs(20))
    } else if sqlite && args.fleet >= 1_000_000 {
        row.target("<= 3 s at 1M (SQLite)", worst <= Duration::from_secs(3))
    } else {
        row
    }])
}

/// The server's flush counters from `/metrics`: rows written, seconds spent flushing, flushes.
async fn flushes(http: &reqwest::Client, url: &str) -> anyhow::Result<(f64, f64, f64)> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .context("cannot read /metrics")?
        .text()
        .await?;
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((
        value("vigil_flush_rows_total"),
        value("vigil_flush_duration_seconds_sum"),
        value("vigil_flush_duration_seconds_count"),
    ))
}
