//! List: `GET /v1/services` in full and filtered by host, at each of `--list-sizes`, on a
//! server loaded with that many services, and a Prometheus scrape of it (`GET /metrics`, with
//! the per-service series). Times are to the last byte of the answer.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;

use super::child::{host_name, BenchDb, ServerChild, ServerOptions, PER_HOST};
use super::http::{Conn, Histogram};
use super::{count, nanos, BenchArgs, Row};

/// Most time spent on full lists at one size, so that a slow list cannot hold the run up.
const FULL_LIST_BUDGET: Duration = Duration::from_secs(40);

/// Scrapes of `/metrics` timed per size.
const SCRAPES: usize = 5;

pub async fn run(args: &BenchArgs, database: Option<&str>) -> anyhow::Result<Vec<Row>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let mut rows = Vec::new();
    for &size in &args.list_sizes {
        let db = BenchDb::create(database).await?;
        eprintln!("list: inserting {} services", count(size as u64));
        db.populate(size).await?;
        let server = ServerChild::start(
            &db,
            ServerOptions {
                service_down_time: 60.0,
                flush_interval: args.flush_interval,
                bench_reference: false,
                metrics_per_service: true,
                cinder: false,
            },
        )
        .await?;
        let url = format!("{}/v1/services", server.url());
        let mut full = Histogram::default();
        let mut bytes = 0;
        let started = Instant::now();
        // One unmeasured list first, checked: the first answer of its size also grows the
        // allocator's pools.
        for run in 0..=args.list_runs.max(1) {
            let sent = Instant::now();
            let response = http.get(&url).send().await.context("full list")?;
            if !response.status().is_success() {
                bail!("full list answered {}", response.status());
            }
            if run > 0 {
                // Measured runs read to the last byte and discard it, as load tools do: the
                // client's own parsing is not the server's latency.
                let mut body = response.bytes_stream();
                bytes = 0;
                while let Some(piece) = body.next().await {
                    bytes += piece?.len();
                }
                full.record(sent.elapsed().as_nanos() as u64);
            } else {
                let body = response.bytes().await?;
                let list: vigil_proto::ServiceList =
                    serde_json::from_slice(&body).context("the full list is not a list")?;
                if list.services.len() != size {
                    bail!(
                        "the full list has {} services, not {size}",
                        list.services.len()
                    );
                }
            }
            if started.elapsed() > FULL_LIST_BUDGET && full.count() >= 3 {
                break;
            }
        }
        let mut filtered = Histogram::default();
        let mut conn = Conn::connect(server.addr).await?;
        let hosts = size.div_ceil(PER_HOST).max(1);
        for i in 0..args.host_runs {
            let host = host_name((i * 7919) % hosts);
            let path = format!("/v1/services?host={host}");
            let sent = Instant::now();
            let status = conn.get(&path).await?;
            if status != 200 {
                bail!("host-filtered list answered {status}");
            }
            filtered.record(sent.elapsed().as_nanos() as u64);
        }
        // Prometheus's scrape: the server's metrics and five series per service.
        let mut scrape = Histogram::default();
        let mut scraped = 0;
        let metrics = format!("{}/metrics", server.url());
        for _ in 0..SCRAPES {
            let sent = Instant::now();
            let response = http
                .get(&metrics)
                .header("accept", "application/openmetrics-text; version=1.0.0")
                .send()
                .await
                .context("scrape")?;
            if !response.status().is_success() {
                bail!("the scrape answered {}", response.status());
            }
            let mut body = response.bytes_stream();
            scraped = 0;
            while let Some(piece) = body.next().await {
                scraped += piece?.len();
            }
            scrape.record(sent.elapsed().as_nanos() as u64);
        }
        server.stop().await;
        db.remove().await;

        let label = format!("list ({} services)", count(size as u64));
        let full_p50 = Duration::from_nanos(full.quantile(0.5));
        let mut full_row = Row::info(
            &label,
            format!(
                "full list p50 / p99 ({} runs, {:.0} MB)",
                full.count(),
                bytes as f64 / 1e6
            ),
            format!(
                "{} / {}",
                nanos(full.quantile(0.5)),
                nanos(full.quantile(0.99))
            ),
        );
        if size == 100_000 {
            full_row = full_row.target("p50 <= 50 ms", full_p50 <= Duration::from_millis(50));
        }
        rows.push(full_row);
        let filtered_p50 = Duration::from_nanos(filtered.quantile(0.5));
        let mut filtered_row = Row::info(
            &label,
            format!("host-filtered list p50 / p99 ({} runs)", filtered.count()),
            format!(
                "{} / {}",
                nanos(filtered.quantile(0.5)),
                nanos(filtered.quantile(0.99))
            ),
        );
        if size == 1_000_000 {
            filtered_row =
                filtered_row.target("p50 <= 1 ms", filtered_p50 <= Duration::from_millis(1));
        }
        rows.push(filtered_row);
        rows.push(Row::info(
            &label,
            format!(
                "scrape of /metrics p50 / p99 ({} runs, {:.0} MB)",
                scrape.count(),
                scraped as f64 / 1e6
            ),
            format!(
                "{} / {}",
                nanos(scrape.quantile(0.5)),
                nanos(scrape.quantile(0.99))
            ),
        ));
    }
    Ok(rows)
}
