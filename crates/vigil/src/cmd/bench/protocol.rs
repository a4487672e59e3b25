//! Protocol: the same heartbeats over HTTP/1.1 (one request at a time on each of
//! `--connections` connections) and over HTTP/2 without TLS (h2c, prior knowledge: the
//! requests of `--connections` concurrent senders multiplexed on `H2_CONNECTIONS`
//! connections), single beats and batches of 100, alternately (h1, h2, h2, h1).
//!
//! Both sides use reqwest, so the client's cost is alike; what is compared is the server's CPU
//! per request and per beat, which HTTP/2 lowers by sharing a connection's reads and writes
//! among its streams.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::child::{ServerChild, AGENT_TOKEN};
use super::http::Histogram;
use super::ingest::{batch_body, beat_body, failed_in_answer, Load};
use super::{count, human, nanos, BenchArgs, Row};

/// HTTP/2 connections the senders share (each carries many concurrent streams).
const H2_CONNECTIONS: usize = 4;

/// Beats per request of the batched comparison.
const BATCH: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    H2c,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::H2c => "HTTP/2 (h2c)",
        }
    }

    fn clients(self, connections: usize) -> anyhow::Result<Vec<reqwest::Client>> {
        let builder = || reqwest::Client::builder().timeout(Duration::from_secs(30));
        Ok(match self {
            Protocol::Http1 => vec![builder()
                .http1_only()
                .pool_max_idle_per_host(connections)
                .build()?],
            Protocol::H2c => (0..H2_CONNECTIONS.min(connections).max(1))
                .map(|_| builder().http2_prior_knowledge().build())
                .collect::<Result<_, _>>()?,
        })
    }
}

async fn closed_loop(
    args: &BenchArgs,
    server: &ServerChild,
    protocol: Protocol,
    batch: usize,
    duration: Duration,
) -> anyhow::Result<Load> {
    let clients = protocol.clients(args.connections)?;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu_before = server.cpu_time()?;
    let started = Instant::now();
    let services = args.services;
    let connections = args.connections;
    let base = server.url();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let client = clients[c % clients.len()].clone();
        let (stop, errors, base) = (stop.clone(), errors.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::default();
            let (mut ok, mut requests) = (0u64, 0u64);
            let mut next = c;
            let mut body = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let url = if batch > 1 {
                    let first = next;
                    next += connections * batch;
                    batch_body(
                        (0..batch).map(|i| ((first + i * connections) % services) as i64 + 1),
                        &mut body,
                    );
                    format!("{base}/v1/heartbeats")
                } else {
                    let id = (next % services) as i64 + 1;
                    next += connections;
                    beat_body(id, &mut body);
                    format!("{base}/v1/services/{id}/heartbeat")
                };
                let sent = Instant::now();
                let answer = client
                    .post(url)
                    .bearer_auth(AGENT_TOKEN)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let beats = batch as u64;
                match answer {
                    Ok(answer) if answer.status() == 200 => {
                        let version = answer.version();
                        let text = answer.bytes().await.unwrap_or_default();
                        latency.record(sent.elapsed().as_nanos() as u64);
                        // A beat over the other protocol is not measured as this one.
                        let wrong_protocol =
                            (protocol == Protocol::H2c) != (version == reqwest::Version::HTTP_2);
                        let failed = if wrong_protocol {
                            beats
                        } else {
                            failed_in_answer(&text)
                        };
                        ok += beats - failed;
                        requests += 1;
                        errors.fetch_add(failed, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(beats, Ordering::Relaxed);
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

pub async fn run(args: &BenchArgs, server: &ServerChild) -> anyhow::Result<Vec<Row>> {
    let half = Duration::from_secs_f64(args.duration / 2.0);
    let warm_up = Duration::from_secs_f64(1f64.min(args.duration));
    let mut rows = Vec::new();
    for batch in [1, BATCH] {
        eprintln!(
            "protocol: {} senders, {batch} beats per request, HTTP/1.1 and h2c alternately, {} s each",
            args.connections, args.duration
        );
        let (mut h1, mut h2) = (Load::default(), Load::default());
        for protocol in [
            Protocol::Http1,
            Protocol::H2c,
            Protocol::H2c,
            Protocol::Http1,
        ] {
            closed_loop(args, server, protocol, batch, warm_up).await?;
            let load = closed_loop(args, server, protocol, batch, half).await?;
            match protocol {
                Protocol::Http1 => h1.merge(load),
                Protocol::H2c => h2.merge(load),
            }
        }
        let label = format!(
            "protocol ({batch} beats per request, {} senders; h2c on {} connections)",
            args.connections,
            H2_CONNECTIONS.min(args.connections).max(1)
        );
        for (protocol, load) in [(Protocol::Http1, &h1), (Protocol::H2c, &h2)] {
            rows.push(Row::info(
                &label,
                format!(
                    "{}: beats/s; server CPU per beat; latency p50 / p99",
                    protocol.name()
                ),
                format!(
                    "{}; {}; {} / {}",
                    count(load.rate() as u64),
                    human(load.cpu_per_request()),
                    nanos(load.latency.quantile(0.5)),
                    nanos(load.latency.quantile(0.99))
                ),
            ));
        }
        rows.push(Row::info(
            &label,
            "server CPU per beat, h2c / HTTP/1.1",
            format!(
                "{:.2} x",
                h2.cpu_per_request().as_secs_f64() / h1.cpu_per_request().as_secs_f64().max(1e-12)
            ),
        ));
        if h1.errors + h2.errors > 0 {
            rows.push(Row::info(
                &label,
                "failed beats (HTTP/1.1 / h2c)",
                format!("{} / {}", h1.errors, h2.errors),
            ));
        }
    }
    Ok(rows)
}
