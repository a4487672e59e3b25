//! Cinder: `GET /v3/os-services` on the Cinder-compatible listener, the whole fleet, as
//! `cinder service-list` asks for it (microversion 3.71, so with `cluster`, and `backend_state`
//! on `cinder-volume` rows). Every service has beaten once before, so each row has its
//! `updated_at` and is `up`. Times are to the last byte of the answer.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;

use super::child::{zone_of, BenchDb, ServerChild, ServerOptions, AGENT_TOKEN};
use super::http::Histogram;
use super::{count, nanos, BenchArgs, Row};

/// Most time spent on lists, so that a slow list cannot hold the run up.
const BUDGET: Duration = Duration::from_secs(40);

/// Beats per request of the round that gives every service its `updated_at`.
const BEATS_PER_REQUEST: usize = 1000;

/// The microversion cinderclient 9 asks for.
const MICROVERSION: &str = "volume 3.71";

pub async fn run(args: &BenchArgs, database: Option<&str>) -> anyhow::Result<Vec<Row>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let size = args.cinder_services;
    let db = BenchDb::create(database).await?;
    eprintln!("cinder: inserting {} services", count(size as u64));
    db.populate(size).await?;
    let server = ServerChild::start(
        &db,
        ServerOptions {
            service_down_time: 60.0,
            flush_interval: args.flush_interval,
            bench_reference: false,
            metrics_per_service: false,
            cinder: true,
        },
    )
    .await?;
    // One beat of every service (ids 1..=size in a fresh database).
    let beats_url = format!("{}/v1/heartbeats", server.url());
    for first in (1..=size as i64).step_by(BEATS_PER_REQUEST) {
        let last = (first + BEATS_PER_REQUEST as i64 - 1).min(size as i64);
        let beats: Vec<serde_json::Value> = (first..=last)
            .map(|id| serde_json::json!({"id": id, "zone": zone_of(id)}))
            .collect();
        let response = http
            .post(&beats_url)
            .bearer_auth(AGENT_TOKEN)
            .json(&serde_json::json!({ "beats": beats }))
            .send()
            .await
            .context("beat round")?;
        if !response.status().is_success() {
            bail!("a beat of the round answered {}", response.status());
        }
    }
    let addr = server
        .cinder_addr
        .context("the server has no Cinder listener")?;
    let url = format!("http://{addr}/v3/os-services");
    let mut lists = Histogram::default();
    let mut bytes = 0;
    let started = Instant::now();
    // One unmeasured list first, checked.
    for run in 0..=args.cinder_runs.max(1) {
        let sent = Instant::now();
        let response = http
            .get(&url)
            .header("openstack-api-version", MICROVERSION)
            .send()
            .await
            .context("cinder list")?;
        if !response.status().is_success() {
            bail!("the Cinder list answered {}", response.status());
        }
        if run > 0 {
            let mut body = response.bytes_stream();
            bytes = 0;
            while let Some(piece) = body.next().await {
                bytes += piece?.len();
            }
            lists.record(sent.elapsed().as_nanos() as u64);
        } else {
            let body: serde_json::Value = response.json().await?;
            let rows = body["services"]
                .as_array()
                .context("the Cinder list has no services")?;
            if rows.len() != size {
                bail!("the Cinder list has {} services, not {size}", rows.len());
            }
            if rows
                .iter()
                .any(|row| row["state"] != "up" || row["updated_at"].is_null())
            {
                bail!("a service of the Cinder list is not up since its beat");
            }
        }
        if started.elapsed() > BUDGET && lists.count() >= 3 {
            break;
        }
    }
    server.stop().await;
    db.remove().await;
    let p50 = Duration::from_nanos(lists.quantile(0.5));
    let mut row = Row::info(
        format!("cinder ({} services)", count(size as u64)),
        format!(
            "GET /v3/os-services p50 / p99 ({} runs, {:.0} MB)",
            lists.count(),
            bytes as f64 / 1e6
        ),
        format!(
            "{} / {}",
            nanos(lists.quantile(0.5)),
            nanos(lists.quantile(0.99))
        ),
    );
    if size == 100_000 {
        row = row.target("p50 <= 60 ms", p50 <= Duration::from_millis(60));
    }
    Ok(vec![row])
}
