//! `vigil maintenance start|end|list`: maintenance windows (admin).

use std::time::Duration;

use reqwest::Method;
use vigil_proto::{Maintenance, MaintenanceList, MaintenanceRequest, MAX_MAINTENANCE_S};

use crate::client::{CliError, Client, ServerOpts};
use crate::table;

#[derive(clap::Args, Debug)]
pub struct MaintenanceArgs {
    #[command(flatten)]
    pub server: ServerOpts,
    #[command(subcommand)]
    pub command: MaintenanceCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum MaintenanceCommand {
    /// Start a window now: the services of HOST (or BINARY on it) show in_maintenance, are
    /// judged as always, and are not alerted on, until it ends by itself or is ended.
    Start {
        /// The host whose services the window covers.
        host: String,
        /// Only this binary of the host [default: every binary of the host].
        binary: Option<String>,
        /// How long it lasts (2h, 90m, 1h30m); at most 30 days.
        #[arg(long = "for", value_name = "DURATION", value_parser = window_length)]
        duration: Duration,
        /// Why: shown with the services, in their down events and by the doctor.
        #[arg(long)]
        reason: String,
        /// Print the window as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// End windows now: the window ID, or every window that holds for HOST (and BINARY).
    End {
        /// A window's id (a number alone), or a host.
        target: String,
        /// With a host: only its windows of this binary [default: all of the host's].
        binary: Option<String>,
        /// Print the ended windows as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the windows that hold now.
    List {
        /// Every window kept, ended ones included.
        #[arg(long)]
        all: bool,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// A window's length: above 0, at most 30 days (checked here, exit 2, as the server would).
fn window_length(value: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if duration.is_zero() || duration.as_secs_f64() > MAX_MAINTENANCE_S {
        return Err("a window lasts more than 0 and at most 30 days (30d)".into());
    }
    Ok(duration)
}

pub async fn run(args: MaintenanceArgs) -> Result<i32, CliError> {
    let client = args.server.client()?;
    match args.command {
        MaintenanceCommand::Start {
            host,
            binary,
            duration,
            reason,
            json,
        } => {
            let request = MaintenanceRequest {
                host,
                binary,
                duration_s: Some(duration.as_secs_f64()),
                ends_at: None,
                reason,
            };
            let window: Maintenance = client
                .call(Method::POST, "/v1/maintenance", Some(&request))
                .await?
                .ok_or_else(|| CliError::refused("empty answer to a new window"))?;
            print(&[window], json);
        }
        MaintenanceCommand::End {
            target,
            binary,
            json,
        } => {
            let ids = match (target.parse::<i64>(), &binary) {
                (Ok(id), None) => vec![id],
                _ => holding(&client, &target, binary.as_deref()).await?,
            };
            let mut ended = Vec::with_capacity(ids.len());
            for id in ids {
                let window: Maintenance = client
                    .call(
                        Method::DELETE,
                        &format!("/v1/maintenance/{id}"),
                        None::<&()>,
                    )
                    .await?
                    .ok_or_else(|| CliError::refused("empty answer to ending a window"))?;
                ended.push(window);
            }
            print(&ended, json);
        }
        MaintenanceCommand::List { all, json } => {
            let query = [("all", all.to_string())];
            let list: MaintenanceList = client.get("/v1/maintenance", &query).await?;
            print(&list.windows, json);
        }
    }
    Ok(0)
}

/// The ids of the windows that hold now for `host` (and `binary`: the windows of that binary
/// only); an error that names them when there is none.
async fn holding(client: &Client, host: &str, binary: Option<&str>) -> Result<Vec<i64>, CliError> {
    let list: MaintenanceList = client.get("/v1/maintenance", &[]).await?;
    let ids: Vec<i64> = list
        .windows
        .iter()
        .filter(|w| w.host == host && binary.is_none_or(|b| w.binary.as_deref() == Some(b)))
        .map(|w| w.id)
        .collect();
    if ids.is_empty() {
        return Err(CliError::refused(match binary {
            Some(binary) => format!("no maintenance window holds for {binary} on host {host}"),
            None => format!("no maintenance window holds for host {host}"),
        }));
    }
    Ok(ids)
}

fn print(windows: &[Maintenance], json: bool) {
    if json {
        match serde_json::to_string_pretty(windows) {
            Ok(text) => println!("{text}"),
            Err(err) => eprintln!("vigil: cannot print JSON: {err}"),
        }
    } else {
        println!("{}", table::maintenance(windows));
    }
}
