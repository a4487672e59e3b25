//! `vigil confirm-down [HOST [BINARY]]`: after a mass failure, declare down the services the
//! partition guard holds `unreachable` (admin).

use reqwest::Method;
use vigil_proto::{ConfirmDownRequest, ConfirmDownResponse};

use crate::client::{CliError, ServerOpts};

#[derive(clap::Args, Debug)]
pub struct ConfirmDownArgs {
    #[command(flatten)]
    pub server: ServerOpts,
    /// Only the services of this host [default: every service held unreachable].
    pub host: Option<String>,
    /// Only this binary of HOST.
    pub binary: Option<String>,
}

pub async fn run(args: ConfirmDownArgs) -> Result<i32, CliError> {
    let client = args.server.client()?;
    let request = ConfirmDownRequest {
        host: args.host,
        binary: args.binary,
    };
    let done: ConfirmDownResponse = client
        .call(Method::POST, "/v1/confirm-down", Some(&request))
        .await?
        .ok_or_else(|| CliError::refused("empty answer to confirm-down"))?;
    if !done.leader {
        eprintln!(
            "vigil: this server does not lead detection, and only the leader holds services unreachable: ask the leader (its /readyz says role leader)"
        );
        return Ok(1);
    }
    println!(
        "confirmed {} service(s) down; {} still unreachable",
        done.confirmed, done.unreachable
    );
    Ok(0)
}
