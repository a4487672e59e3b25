//! `vigil`: the one command of Vigil, a service-liveness registry.
//!
//! # Layout
//! - `cmd/`: one module per subcommand (server, agent, service, config, demo, bench, ...).
//! - `client`: the HTTP client the admin subcommands share, and exit codes.
//! - `table`: service tables as `cinder service-list` prints them, and event tables.
//! - `systemd`: readiness and watchdog notifications under a `Type=notify` unit.
//!
//! Exit codes: 0 success, 1 the server refused or the work failed, 2 usage error, 3 the server
//! could not be reached.

use std::io::IsTerminal;

use clap::{CommandFactory, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

mod client;
mod cmd;
mod systemd;
mod table;

#[derive(Parser, Debug)]
#[command(
    name = "vigil",
    version,
    about = "Service-liveness registry: who is up, who is down, and why"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the registry server.
    Server(cmd::server::ServerArgs),
    /// Heartbeat for a service (optionally running it as a child): a sidecar.
    Agent(cmd::agent::AgentArgs),
    /// List and administer services.
    Service(cmd::service::ServiceArgs),
    /// Configuration helpers.
    Config(cmd::config::ConfigArgs),
    /// Run a server and a simulated fleet, and watch one service go down.
    Demo(cmd::demo::DemoArgs),
    /// Measure a server on this machine: heartbeat ingest, lists, detection, memory, restart.
    Bench(cmd::bench::BenchArgs),
    /// Tell why services are down, or about to be: one finding per known cause.
    Doctor(cmd::doctor::DoctorArgs),
    /// The history of transitions and admin changes, newest first.
    Events(cmd::events::EventsArgs),
    /// Make, list and revoke tokens (admin, agent bound to hosts, reader).
    Token(cmd::token::TokenArgs),
    /// After a mass failure, declare down the services held unreachable (all, or a host's).
    ConfirmDown(cmd::confirm_down::ConfirmDownArgs),
    /// Start, end and list maintenance windows: services judged as always, not alerted on.
    Maintenance(cmd::maintenance::MaintenanceArgs),
    /// Print events as they happen, until Ctrl-C; survives server restarts.
    Watch(cmd::watch::WatchArgs),
    /// Print the shell completion script for bash, zsh or fish.
    Completions(cmd::completions::CompletionsArgs),
    /// Print the manual page, or write one per subcommand into a directory.
    Man(cmd::completions::ManArgs),
}

/// The command line's definition, for completions and manual pages.
pub fn command() -> clap::Command {
    Cli::command()
}

fn init_logging(default: &str) {
    init_logging_as(default, vigil_server::LogFormat::Text);
}

/// Logs to stderr, filtered by `VIGIL_LOG`, else `RUST_LOG`, else `default` (a `tracing`
/// filter); as text, or as one JSON object per line with the spans' fields.
fn init_logging_as(default: &str, format: vigil_server::LogFormat) {
    let filter = ["VIGIL_LOG", "RUST_LOG"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        vigil_server::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        vigil_server::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// A command that prints for a pipe (`vigil events | head`) ends quietly when the reader goes,
/// as Unix tools do, instead of panicking on a closed stdout. Not for the server and the agent,
/// whose sockets and child must never end the process by a signal.
fn quiet_on_closed_pipe(command: &Command) {
    if matches!(
        command,
        Command::Service(_)
            | Command::Config(_)
            | Command::Doctor(_)
            | Command::Events(_)
            | Command::Token(_)
            | Command::ConfirmDown(_)
            | Command::Maintenance(_)
            | Command::Watch(_)
            | Command::Completions(_)
            | Command::Man(_)
    ) {
        // SAFETY: restores the default action of SIGPIPE before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
}

fn main() {
    let cli = Cli::parse();
    quiet_on_closed_pipe(&cli.command);
    let result = match cli.command {
        Command::Server(args) => args.into_config().and_then(|config| {
            init_logging_as("info", config.log_format);
            runtime().and_then(|rt| rt.block_on(cmd::server::run(config)))
        }),
        Command::Agent(args) => {
            init_logging("info");
            cmd::agent::run(args)
        }
        Command::Service(args) => {
            init_logging("warn");
            runtime().and_then(|rt| rt.block_on(cmd::service::run(args)).map_err(Into::into))
        }
        Command::Config(args) => Ok(cmd::config::run(args)),
        Command::Demo(args) => {
            // The server's start-up check judges a hypothetical reporter with Cinder's 10 s
            // interval, which the demo's 5 s service_down_time would fail; the demo checks its
            // own fleet's interval instead (cmd::demo), so that it starts clean.
            init_logging("error,vigil_server::doctor=off");
            runtime().and_then(|rt| rt.block_on(cmd::demo::run(args)))
        }
        Command::Bench(args) => {
            init_logging("warn");
            runtime().and_then(|rt| rt.block_on(cmd::bench::run(args)))
        }
        Command::Doctor(args) => {
            init_logging("warn");
            runtime().and_then(|rt| rt.block_on(cmd::doctor::run(args)).map_err(Into::into))
        }
        Command::Events(args) => {
            init_logging("warn");
            runtime().and_then(|rt| rt.block_on(cmd::events::run(args)).map_err(Into::into))
        }
        Command::Token(args) => {
            init_logging("warn");
            runtime().and_then(|rt| rt.block_on(cmd::token::run(args)).map_err(Into::into))
        }
        Command::ConfirmDown(args) => {
            init_logging("warn");
            runtime().and_then(|rt| {
                rt.block_on(cmd::confirm_down::run(args))
                    .map_err(Into::into)
            })
        }
        Command::Maintenance(args) => {
            init_logging("warn");
            runtime().and_then(|rt| rt.block_on(cmd::maintenance::run(args)).map_err(Into::into))
        }
        Command::Watch(args) => {
            init_logging("warn");
            runtime().and_then(|rt| rt.block_on(cmd::watch::run(args)).map_err(Into::into))
        }
        Command::Completions(args) => cmd::completions::completions(args),
        Command::Man(args) => cmd::completions::man(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            let code = err
                .downcast_ref::<client::CliError>()
                .map_or(1, |e| e.exit_code);
            eprintln!("vigil: {}", one_line(&err));
            std::process::exit(code);
        }
    }
}

/// The error and its causes on one line: "cannot listen on 127.0.0.1:1: Permission denied".
fn one_line(err: &anyhow::Error) -> String {
    err.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}
