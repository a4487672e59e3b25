//! `vigil demo`: a server on a temporary database and a simulated fleet, one of which stops,
//! redrawn every second so a newcomer sees a service go from up to down; the dashboard's
//! address comes first, to open in a browser.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::oneshot;
use vigil_reporter::{Reporter, ReporterHandle};
use vigil_server::Config;

use crate::client::Client;
use crate::table;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Hosts in the simulated fleet.
    #[arg(long, default_value_t = 4)]
    pub hosts: usize,
    /// Services per host.
    #[arg(long, default_value_t = 3)]
    pub services_per_host: usize,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 1.0)]
    pub report_interval: f64,
    /// Seconds without a heartbeat after which a service is down.
    #[arg(long, default_value_t = 5.0)]
    pub service_down_time: f64,
    /// Seconds after which one service stops.
    #[arg(long, default_value_t = 4.0)]
    pub stop_after: f64,
    /// End by itself after this many seconds [default: run until Ctrl-C].
    #[arg(long)]
    pub duration: Option<f64>,
}

const BINARIES: [&str; 3] = ["cinder-volume", "cinder-scheduler", "cinder-backup"];

pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
    let dir = tempfile::Builder::new()
        .prefix("vigil-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let token = "demo-admin-token".to_string();
    let config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        service_down_time: args.service_down_time,
        flush_interval: 0.5,
        admin_token: Some(token.clone()),
        // The simulated fleet runs in this process, on loopback: no tokens to hand out.
        auth: vigil_server::AuthConfig {
            open_registration: true,
            ..vigil_server::AuthConfig::default()
        },
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop_server, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(vigil_server::serve(listener, config, async {
        let _ = stopped.await;
    }));

    let interval = Duration::try_from_secs_f64(args.report_interval)
        .context("--report-interval must be a positive number of seconds")?;
    // The check the server logs at start-up, for the interval this fleet really uses.
    let fit = vigil_server::check_report_interval(args.report_interval, args.service_down_time);
    if fit.severity != vigil_proto::Severity::Ok {
        eprintln!("vigil demo: {}; {}", fit.summary, fit.remedy);
    }
    let mut fleet: Vec<(String, String, Option<ReporterHandle>)> = Vec::new();
    for h in 1..=args.hosts {
        for binary in BINARIES.iter().cycle().take(args.services_per_host) {
            let host = format!("demo-host-{h}");
            let handle = Reporter::builder(&url, &host, *binary)
                .report_interval(interval)
                .zone(if h % 2 == 0 { "az-2" } else { "az-1" })
                .start()?;
            fleet.push((host, binary.to_string(), Some(handle)));
        }
    }
    let victim = fleet.len() / 2;
    let client = Client::new(&url, Some(token.clone()), None);
    // The dashboard first, on every redraw: what a newcomer opens.
    let dashboard = format!("dashboard: {url}/ (its admin actions take the token {token})");
    let terminal = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut note = format!(
        "{} services on {} hosts report every {} s; one stops after {} s and is down {} s later. Ctrl-C ends the demo.",
        fleet.len(),
        args.hosts,
        args.report_interval,
        args.stop_after,
        args.service_down_time
    );
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let elapsed = started.elapsed().as_secs_f64();
        if elapsed >= args.stop_after {
            if let Some(handle) = fleet.get_mut(victim).and_then(|f| f.2.take()) {
                // Killed, not stopped cleanly: the demo shows a failure being detected.
                handle.stop_silently();
                handle.shutdown().await;
                note = format!(
                    "stopped {} on {} at {:.0} s; it shows down once {} s pass without a heartbeat",
                    fleet[victim].1, fleet[victim].0, elapsed, args.service_down_time
                );
            }
        }
        match client.list(&[]).await {
            Ok(services) => {
                if terminal {
                    print!("\x1b[2J\x1b[H");
                }
                println!("{dashboard}\nvigil demo at {elapsed:.0} s, server {url}\n{note}");
                println!("{}", table::services(&services));
            }
            Err(err) => eprintln!("vigil demo: {err}"),
        }
        if args.duration.is_some_and(|d| elapsed >= d) {
            break;
        }
    }
    for (_, _, handle) in fleet {
        if let Some(handle) = handle {
            handle.shutdown().await;
        }
    }
    let _ = stop_server.send(());
    server.await??;
    drop(dir);
    println!("demo ended; its temporary database was removed");
    Ok(0)
}
