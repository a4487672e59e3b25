//! `vigil service ...`: list, show, enable, disable, force down, delete.

use vigil_proto::UpdateServiceRequest;

use crate::client::{CliError, ServerOpts};
use crate::table;

#[derive(clap::Args, Debug)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub server: ServerOpts,
    #[command(subcommand)]
    pub command: ServiceCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ServiceCommand {
    /// List services as `cinder service-list` does.
    List(ListArgs),
    /// Show one service in full (JSON, with or without --json).
    Show(Target),
    /// Enable a service.
    Enable(Target),
    /// Disable a service, optionally saying why.
    Disable(DisableArgs),
    /// Declare a service down at once, whatever its heartbeats say (fencing); --unset ends it.
    ForceDown(ForceDownArgs),
    /// Delete a service; one that is up needs --force (its process would re-create it).
    Delete(DeleteArgs),
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    pub binary: Option<String>,
    #[arg(long)]
    pub zone: Option<String>,
    /// Only services in this state.
    #[arg(long, value_parser = ["up", "down", "stopped", "unreachable", "unknown"])]
    pub state: Option<String>,
    /// Only services with this status.
    #[arg(long, value_parser = ["enabled", "disabled"])]
    pub status: Option<String>,
    /// Only services of this source: `vigil` (registered here) or a watch's name.
    #[arg(long)]
    pub source: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct Target {
    pub host: String,
    pub binary: String,
    /// Print the service as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct DisableArgs {
    #[command(flatten)]
    pub target: Target,
    /// Why it is disabled (at most 255 characters).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ForceDownArgs {
    #[command(flatten)]
    pub target: Target,
    /// Clear forced down instead.
    #[arg(long)]
    pub unset: bool,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub target: Target,
    /// Delete even though the service is up.
    #[arg(long)]
    pub force: bool,
}

pub async fn run(args: ServiceArgs) -> Result<i32, CliError> {
    let client = args.server.client()?;
    match args.command {
        ServiceCommand::List(list) => {
            let mut query = Vec::new();
            for (key, value) in [
                ("host", list.host),
                ("binary", list.binary),
                ("zone", list.zone),
                ("state", list.state),
                ("status", list.status),
                ("source", list.source),
            ] {
                if let Some(value) = value {
                    query.push((key, value));
                }
            }
            let mut services = client.list(&query).await?;
            // As `cinder service-list` reads: by binary, then host (the server answers in
            // registration order).
            services.sort_by(|a, b| (&a.binary, &a.host, a.id).cmp(&(&b.binary, &b.host, b.id)));
            if list.json {
                print_json(&services);
            } else {
                println!("{}", table::services(&services));
            }
        }
        ServiceCommand::Show(target) => {
            print_json(&client.find(&target.host, &target.binary).await?);
        }
        ServiceCommand::Enable(target) => {
            let change = UpdateServiceRequest {
                disabled: Some(false),
                ..Default::default()
            };
            update(&client, &target, &change).await?;
        }
        ServiceCommand::Disable(args) => {
            let change = UpdateServiceRequest {
                disabled: Some(true),
                disabled_reason: args.reason,
                ..Default::default()
            };
            update(&client, &args.target, &change).await?;
        }
        ServiceCommand::ForceDown(args) => {
            let change = UpdateServiceRequest {
                forced_down: Some(!args.unset),
                ..Default::default()
            };
            update(&client, &args.target, &change).await?;
        }
        ServiceCommand::Delete(args) => {
            let service = client.find(&args.target.host, &args.target.binary).await?;
            client.delete(service.id, args.force).await?;
            if args.target.json {
                // The service as it was just before its deletion.
                print_json(&service);
            } else {
                println!("deleted {} on {}", service.binary, service.host);
            }
        }
    }
    Ok(0)
}

async fn update(
    client: &crate::client::Client,
    target: &Target,
    change: &UpdateServiceRequest,
) -> Result<(), CliError> {
    let service = client.find(&target.host, &target.binary).await?;
    let service = client.update(service.id, change).await?;
    if target.json {
        print_json(&service);
    } else {
        println!("{}", table::services(std::slice::from_ref(&service)));
    }
    Ok(())
}

fn print_json<T: serde::Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(err) => eprintln!("vigil: cannot print JSON: {err}"),
    }
}
