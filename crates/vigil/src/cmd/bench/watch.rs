//! `watch`: what watching a large OpenStack costs. A throw-away MariaDB database with a
//! Cinder `services` table of `--watch-rows` rows (Cinder's shape), polled by a real read-only
//! watch as `vigil server --watch` polls it: the poll's database time (both statements and the
//! transfer) and the diff, with no change and with a tenth of the rows having beaten.

use std::time::{Duration, Instant};

use vigil_server::watch::{bench_fixture, WatchConfig, WatchKind, WatchReader, Watcher};

use super::{count, human, BenchArgs, Row};

/// Polls timed per case.
const POLLS: usize = 10;

pub async fn run(args: &BenchArgs) -> anyhow::Result<Vec<Row>> {
    let rows = args.watch_rows;
    let name = format!("vigil_bench_watch_{}", std::process::id());
    eprintln!(
        "watch: filling a Cinder services table of {} rows",
        count(rows as u64)
    );
    let url = bench_fixture::create(&args.watch_database, &name, rows).await?;
    let result = measure(&url, rows).await;
    bench_fixture::drop_database(&args.watch_database, &name).await?;
    result
}

async fn measure(url: &str, rows: usize) -> anyhow::Result<Vec<Row>> {
    let config = WatchConfig {
        kind: WatchKind::Cinder,
        url: url.to_owned(),
        name: None,
        poll_interval: WatchConfig::DEFAULT_POLL_INTERVAL,
        service_down_time: None,
        report_interval: None,
        conf: None,
    };
    let mut watcher = Watcher::new(WatchReader::new(config)?);
    let first = watcher.step().await?;
    anyhow::ensure!(
        first.poll.rows.len() == rows,
        "read {} rows of {rows}",
        first.poll.rows.len()
    );
    let scenario = format!("watch ({} Cinder rows, MariaDB)", count(rows as u64));
    let mut out = Vec::new();
    for (case, every) in [("no change", 0), ("a tenth beat", 10)] {
        let mut polls = Vec::new();
        let mut steps = Vec::new();
        let mut changes = 0;
        for _ in 0..POLLS {
            if every > 0 {
                bench_fixture::beat(url, every).await?;
            }
            let started = Instant::now();
            let step = watcher.step().await?;
            steps.push(started.elapsed());
            polls.push(step.poll.took);
            changes = step.changes.len();
        }
        polls.sort();
        steps.sort();
        let p50 = polls[POLLS / 2];
        let max = polls[POLLS - 1];
        out.push(
            Row::info(
                scenario.clone(),
                format!("one poll, {case}: database time p50 / max ({POLLS} polls)"),
                format!("{} / {}", human(p50), human(max)),
            )
            .target("p50 <= 1 s", p50 <= Duration::from_secs(1)),
        );
        out.push(Row::info(
            scenario.clone(),
            format!("one poll and its diff, {case}: p50 ({changes} changes)"),
            human(steps[POLLS / 2]),
        ));
    }
    watcher.reader().close().await;
    Ok(out)
}
