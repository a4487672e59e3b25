//! `vigil token create|list|revoke`: tokens of the roles admin, agent and reader (admin).

use reqwest::Method;
use vigil_proto::{Role, TokenCreated, TokenList, TokenRequest};

use crate::client::{CliError, ServerOpts};
use crate::table;

#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    #[command(flatten)]
    pub server: ServerOpts,
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token; its secret is printed once (the server keeps only its SHA-256).
    Create {
        /// A unique name: letters, digits, '-', '_' or '.'.
        #[arg(long)]
        name: String,
        /// admin: everything; agent: register and heartbeat on its hosts; reader: every read.
        #[arg(long, value_parser = ["admin", "agent", "reader"])]
        role: String,
        /// An agent token's host pattern (a glob such as 'stor-*', or one host); repeat for
        /// several; '*' for every host. An agent token needs at least one.
        #[arg(long = "host", value_name = "PATTERN")]
        hosts: Vec<String>,
        /// The token stops working after this long (90d, 12h, 1h30m) [default: never].
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
        /// Print the token as JSON (with its secret) instead of the secret alone.
        #[arg(long)]
        json: bool,
    },
    /// List the tokens (never their secrets).
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: refused at once, by every replica within flush_interval.
    Revoke {
        /// The token's name.
        name: String,
    },
}

pub async fn run(args: TokenArgs) -> Result<i32, CliError> {
    let client = args.server.client()?;
    match args.command {
        TokenCommand::Create {
            name,
            role,
            hosts,
            expires,
            json,
        } => {
            let role = match role.as_str() {
                "admin" => Role::Admin,
                "agent" => Role::Agent,
                _ => Role::Reader,
            };
            let request = TokenRequest {
                name,
                role,
                hosts,
                expires_in_s: expires.map(|d| d.as_secs_f64()),
            };
            let created: TokenCreated = client
                .call(Method::POST, "/v1/tokens", Some(&request))
                .await?
                .ok_or_else(|| CliError::refused("empty answer to a new token"))?;
            if json {
                match serde_json::to_string_pretty(&created) {
                    Ok(text) => println!("{text}"),
                    Err(err) => eprintln!("vigil: cannot print JSON: {err}"),
                }
            } else {
                // The secret alone on stdout, so that `$(vigil token create ...)` is the token.
                println!("{}", created.secret);
                eprintln!(
                    "vigil: made the {} token {:?}; its secret is shown this once",
                    created.token.role.as_str(),
                    created.token.name
                );
            }
        }
        TokenCommand::List { json } => {
            let list: TokenList = client.get("/v1/tokens", &[]).await?;
            if json {
                match serde_json::to_string_pretty(&list.tokens) {
                    Ok(text) => println!("{text}"),
                    Err(err) => eprintln!("vigil: cannot print JSON: {err}"),
                }
            } else {
                println!("{}", table::tokens(&list.tokens));
            }
        }
        TokenCommand::Revoke { name } => {
            client
                .call::<serde_json::Value>(
                    Method::DELETE,
                    &format!("/v1/tokens/{}", urlencode(&name)),
                    None::<&()>,
                )
                .await?;
            eprintln!("vigil: revoked the token {name:?}");
        }
    }
    Ok(0)
}

/// A path segment: names are letters, digits, '-', '_' and '.', but a mistyped one may hold
/// anything, and must reach the server as what it is.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
