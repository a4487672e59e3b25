//! `vigil agent`: a sidecar that heartbeats on behalf of a service that does not embed the
//! reporter.
//!
//! With a command (`vigil agent --binary b -- cmd args...`) the agent runs it as a child,
//! heartbeats while it runs, forwards SIGINT and SIGTERM to it, and exits with the child's
//! status, so it can stand in for the command under a supervisor. Without one it heartbeats
//! until SIGINT or SIGTERM. Either way the heartbeats stop when the agent's work stops. A clean
//! end (the command exits 0, or the agent was asked to stop by a signal) is told to the server,
//! which shows the service `stopped` at once; a command that fails (any other status) is not,
//! so the server sees the service go `down` and alerts say so.
//!
//! `--binary` repeated reports several services of one host (one per binary, same settings)
//! with a [`ReporterGroup`]: one `POST /v1/heartbeats` per tick carries all their beats.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::signal::unix::{signal, SignalKind};
use vigil_reporter::{
    HealthStatus, Reporter, ReporterBuilder, ReporterGroup, ReporterGroupHandle, ReporterHandle,
};

/// The shell's exit code for a command that was not found.
const EXIT_NOT_FOUND: i32 = 127;
/// The shell's exit code for a command found but not executable.
const EXIT_NOT_EXECUTABLE: i32 = 126;

/// Heartbeat for a service, optionally running it as a child process.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Base URL of the Vigil server (host:port alone means http://host:port).
    #[arg(
        long,
        value_name = "URL",
        env = "VIGIL_URL",
        default_value = "http://127.0.0.1:8799",
        value_parser = crate::client::server_url
    )]
    pub server: String,
    /// Host to register the service under [default: this machine's hostname].
    #[arg(long, value_name = "H")]
    pub host: Option<String>,
    /// Name of the service's binary, e.g. cinder-volume. Repeat it to report several services
    /// of this host (one per binary, all with these settings) in one batch per heartbeat.
    #[arg(long, value_name = "B", required = true)]
    pub binary: Vec<String>,
    /// The service's topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// The service's availability zone.
    #[arg(long, value_name = "Z")]
    pub zone: Option<String>,
    /// Seconds between heartbeats.
    #[arg(
        long,
        value_name = "S",
        env = "VIGIL_REPORT_INTERVAL",
        default_value_t = vigil_proto::DEFAULT_REPORT_INTERVAL
    )]
    pub report_interval: f64,
    /// The services' own service_down_time, in seconds (within the server's bounds, and at
    /// least twice --report-interval). Unset: the server's.
    #[arg(long, value_name = "S")]
    pub service_down_time: Option<f64>,
    /// The service's software version, shown by the server.
    #[arg(long, value_name = "V")]
    pub service_version: Option<String>,
    /// Agent token sent with every request [default: read from <data dir>/agent.token].
    #[arg(long, env = "VIGIL_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of certificate authorities an https server's certificate is checked against,
    /// besides the system's.
    #[arg(long, env = "VIGIL_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Data directory of a server on this machine, where its agent token is.
    #[arg(long, env = "VIGIL_DATA_DIR", default_value = "vigil-data")]
    pub data_dir: std::path::PathBuf,
    /// A shell command run before each heartbeat (with `sh -c`) whose exit status is the
    /// service's health: 0 ok, 1 warning, 2 failing (anything else, or no answer within half
    /// the report interval, is failing); the first line it prints is the message.
    #[arg(long, value_name = "CMD")]
    pub health_cmd: Option<String>,
    /// The command to run and watch, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Runs the agent; returns the process exit code (the child's, when there is a command).
pub fn run(args: AgentArgs) -> anyhow::Result<i32> {
    let interval = Duration::try_from_secs_f64(args.report_interval)
        .map_err(|_| anyhow!("--report-interval must be a positive number of seconds"))?;
    let down_time = args
        .service_down_time
        .map(Duration::try_from_secs_f64)
        .transpose()
        .map_err(|_| anyhow!("--service-down-time must be a positive number of seconds"))?;
    let host = match args.host {
        Some(host) => host,
        None => hostname::get()
            .context("could not read this machine's hostname; pass --host")?
            .into_string()
            .map_err(|name| anyhow!("hostname {name:?} is not valid UTF-8; pass --host"))?,
    };
    let mut binaries = args.binary.clone();
    binaries.sort();
    if let Some(twice) = binaries.windows(2).find(|pair| pair[0] == pair[1]) {
        bail!("--binary {} is given twice", twice[0]);
    }
    // A token given wins; else the agent token of a server on this machine; else none (a
    // server with `auth.open_registration` needs none).
    let token = args.token.clone().or_else(|| {
        std::fs::read_to_string(args.data_dir.join("agent.token"))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    });
    let builder = |binary: &str| {
        let mut builder = Reporter::builder(&args.server, &host, binary).report_interval(interval);
        if let Some(topic) = &args.topic {
            builder = builder.topic(topic);
        }
        if let Some(zone) = &args.zone {
            builder = builder.zone(zone);
        }
        if let Some(version) = &args.service_version {
            builder = builder.version(version);
        }
        if let Some(down_time) = down_time {
            builder = builder.service_down_time(down_time);
        }
        if let Some(token) = &token {
            builder = builder.token(token);
        }
        if let Some(path) = &args.ca_file {
            builder = builder.ca_file(path);
        }
        if let Some(command) = &args.health_cmd {
            let command = command.clone();
            let limit = interval / 2;
            builder = builder.health(move || health_of(&command, limit));
        }
        builder
    };
    let builders: Vec<ReporterBuilder> = args.binary.iter().map(|b| builder(b)).collect();

    // The signal handlers are installed before anything else runs, so a signal that comes early
    // is forwarded or honoured rather than killing the agent with its child left behind.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the agent's runtime")?;
    let signals = runtime
        .block_on(async { Signals::install() })
        .context("could not install the signal handlers")?;
    // The command starts before the reporter, so a command that cannot run registers nothing
    // and the agent exits as a shell would (127 not found, 126 not executable).
    let child = match args.command.split_first() {
        None => None,
        Some((program, program_args)) => {
            let spawned = runtime.block_on(async {
                // Stdio is inherited, as with `std::process::Command`; tokio's child is used so
                // waiting for it and receiving signals can share one thread without races.
                tokio::process::Command::new(program)
                    .args(program_args)
                    .spawn()
            });
            match spawned {
                Ok(child) => Some((program.clone(), child)),
                Err(err) => {
                    let code = match err.kind() {
                        std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                        _ => EXIT_NOT_EXECUTABLE,
                    };
                    eprintln!("vigil: cannot run command {program:?}: {err}");
                    return Ok(code);
                }
            }
        }
    };
    let reporter = Running::start(builders).context("could not start the heartbeat reporter")?;
    tracing::info!(
        server = %args.server,
        %host,
        binary = %args.binary.join(","),
        "agent reporting heartbeats"
    );
    let outcome = runtime.block_on(supervise(signals, child));
    // Whatever happened to the child, its heartbeats end with it; only a clean end is a stop.
    let clean = outcome.as_ref().is_ok_and(|end| end.clean);
    reporter.stop_and_wait(clean);
    outcome.map(|end| end.code)
}

/// How the agent's work ended.
struct End {
    /// The exit code to exit with.
    code: i32,
    /// The command exited 0, or the agent was asked to stop: a stop, not a failure.
    clean: bool,
}

/// One service reports alone (single heartbeats, which every server takes); several report as
/// a group (batches).
enum Running {
    One(ReporterHandle),
    Group(ReporterGroupHandle),
}

impl Running {
    fn start(mut builders: Vec<ReporterBuilder>) -> Result<Running, vigil_reporter::ReporterError> {
        if builders.len() == 1 {
            if let Some(builder) = builders.pop() {
                return builder.start().map(Running::One);
            }
        }
        builders
            .into_iter()
            .fold(ReporterGroup::builder(), |group, builder| {
                group.service(builder)
            })
            .start()
            .map(Running::Group)
    }

    /// Stops the heartbeats; `announce`: tells the server the services stop.
    fn stop_and_wait(self, announce: bool) {
        match self {
            Running::One(reporter) => {
                if announce {
                    reporter.stop();
                } else {
                    reporter.stop_silently();
                }
                reporter.wait();
            }
            Running::Group(group) => {
                if announce {
                    group.stop();
                } else {
                    group.stop_silently();
                }
                group.wait();
            }
        }
    }
}

/// The agent's SIGINT and SIGTERM streams.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Must run inside the runtime that will poll the streams.
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal received.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            Some(()) = self.interrupt.recv() => Signal::SIGINT,
            Some(()) = self.terminate.recv() => Signal::SIGTERM,
            // Both streams end only if the runtime is going away: treat it as a request to stop.
            else => Signal::SIGTERM,
        }
    }
}

/// Runs the command until it exits (forwarding signals), or without one waits for a signal.
async fn supervise(mut signals: Signals, child: Option<(String, Child)>) -> anyhow::Result<End> {
    let Some((program, mut child)) = child else {
        let signal = signals.next().await;
        tracing::info!(%signal, "stopping on signal");
        return Ok(End {
            code: 0,
            clean: true,
        });
    };
    let mut signalled = false;
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.with_context(|| format!("could not wait for {program:?}"))?;
                let code = exit_code(status)?;
                return Ok(End { code, clean: code == 0 || signalled });
            }
            signal = signals.next() => {
                signalled = true;
                // A terminal's Ctrl-C reaches the child directly too (same process group); a
                // second SIGINT is the usual request to stop, so it is forwarded regardless, as
                // `kill` or a supervisor signals only the agent.
                if let Some(pid) = child.id() {
                    forward(signal, pid);
                }
            }
        }
    }
}

/// Sends `signal` to the child `pid`. The child is not reaped while this runs (only
/// `child.wait()` reaps it, and `child.id()` is `None` afterwards), so the pid cannot have been
/// reused by another process.
fn forward(signal: Signal, pid: u32) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    match kill(Pid::from_raw(raw), signal) {
        Ok(()) => tracing::info!(%signal, pid, "forwarded signal to the command"),
        Err(err) => tracing::warn!(
            %signal,
            pid,
            "could not forward signal to the command: {err}"
        ),
    }
}

/// Runs the health command `command` (with `sh -c`) for at most `limit`: its exit status is
/// the health (0 ok, 1 warning, 2 failing), the first line it printed the message.
fn health_of(command: &str, limit: Duration) -> (HealthStatus, Option<String>) {
    use std::io::Read;
    let spawned = std::process::Command::new("sh")
        .args(["-c", command])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            return (
                HealthStatus::Failing,
                Some(format!("cannot run the health command: {err}")),
            )
        }
    };
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return (
                    HealthStatus::Failing,
                    Some(format!(
                        "the health command gave no answer within {:.2} s",
                        limit.as_secs_f64()
                    )),
                );
            }
            Err(err) => {
                return (
                    HealthStatus::Failing,
                    Some(format!("cannot wait for the health command: {err}")),
                )
            }
        }
    };
    let mut said = String::new();
    for pipe in [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut text = String::new();
        let _ = pipe.take(64 * 1024).read_to_string(&mut text);
        if let Some(line) = text.lines().map(str::trim).find(|l| !l.is_empty()) {
            said = line.chars().take(vigil_proto::MAX_HEALTH_MESSAGE).collect();
            break;
        }
    }
    let message = (!said.is_empty()).then_some(said);
    match status.code() {
        Some(0) => (HealthStatus::Ok, message),
        Some(1) => (HealthStatus::Warning, message),
        Some(2) => (HealthStatus::Failing, message),
        _ => (
            HealthStatus::Failing,
            Some(message.unwrap_or_else(|| format!("the health command ended with {status}"))),
        ),
    }
}

/// The shell's convention: the exit code, or 128 + the signal that killed the child.
fn exit_code(status: ExitStatus) -> anyhow::Result<i32> {
    if let Some(code) = status.code() {
        return Ok(code);
    }
    if let Some(signal) = status.signal() {
        return Ok(128 + signal);
    }
    bail!("the command ended with an unknown status: {status}")
}
