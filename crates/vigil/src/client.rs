//! A small blocking-free HTTP client for the Vigil API, used by the CLI subcommands.
//!
//! Errors carry an exit code: the server refused (1), or it could not be reached (3). Values
//! the CLI can check itself (a server URL, a state, a time) are refused by clap, with exit 2.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use vigil_proto::{ErrorBody, Service, ServiceList, UpdateServiceRequest};

/// Exit code when the server answered with an error.
pub const EXIT_REFUSED: i32 = 1;
/// Exit code when the server could not be reached.
pub const EXIT_UNREACHABLE: i32 = 3;

/// A failed CLI call: one line for stderr and the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub message: String,
    pub exit_code: i32,
}

impl CliError {
    pub fn refused(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            exit_code: EXIT_REFUSED,
        }
    }

    /// A bad option value (exit 2, as clap's own usage errors).
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            exit_code: 2,
        }
    }
}

/// Parses a `--server` value: `http(s)://host[:port][/path]`, or `host:port` taken as `http://`.
/// Anything else is a usage error (exit 2), not a network failure.
pub fn server_url(value: &str) -> Result<String, String> {
    let value = value.trim();
    let url = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    let parsed = reqwest::Url::parse(&url).map_err(|err| {
        format!("{value:?} is not a server URL ({err}); e.g. http://127.0.0.1:8799")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "{value:?}: the scheme must be http or https, not {}",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "{value:?} names no host; e.g. http://127.0.0.1:8799"
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("{value:?}: a server URL has no query or fragment"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Where the server is and how to prove admin rights; shared by the subcommands.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerOpts {
    /// Base URL of the Vigil server (host:port alone means http://host:port).
    #[arg(
        long,
        global = true,
        env = "VIGIL_URL",
        default_value = "http://127.0.0.1:8799",
        value_parser = server_url
    )]
    pub server: String,
    /// Admin token [default: read from <data dir>/admin.token].
    #[arg(long, global = true, env = "VIGIL_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data directory of a server on this machine, where its generated admin token is.
    #[arg(
        long,
        global = true,
        env = "VIGIL_DATA_DIR",
        default_value = "vigil-data"
    )]
    pub data_dir: PathBuf,
    /// PEM file of certificate authorities an https server's certificate is checked against,
    /// besides the system's.
    #[arg(long, global = true, env = "VIGIL_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
}

impl ServerOpts {
    pub fn client(&self) -> Result<Client, CliError> {
        let client = Client::new(&self.server, self.token.clone(), Some(&self.data_dir));
        match &self.ca_file {
            Some(path) => client.with_ca_file(path),
            None => Ok(client),
        }
    }
}

/// Where the admin token came from, so that a refusal can say where to look.
#[derive(Debug, Clone)]
enum TokenSource {
    /// `--token` or `VIGIL_ADMIN_TOKEN`.
    Given,
    /// Read from this file.
    File(PathBuf),
    /// No token: not given, and the file could not be read (why).
    Missing { file: Option<PathBuf>, why: String },
}

/// Client of one server.
pub struct Client {
    base: String,
    token: Option<String>,
    source: TokenSource,
    http: reqwest::Client,
}

impl Client {
    /// `token` wins over the token file in `data_dir`.
    pub fn new(base: &str, token: Option<String>, data_dir: Option<&Path>) -> Client {
        let (token, source) = match (token, data_dir) {
            (Some(token), _) => (Some(token), TokenSource::Given),
            (None, None) => (
                None,
                TokenSource::Missing {
                    file: None,
                    why: "none given".into(),
                },
            ),
            (None, Some(dir)) => {
                let path = dir.join("admin.token");
                let shown = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
                match std::fs::read_to_string(&path) {
                    Ok(text) if !text.trim().is_empty() => {
                        (Some(text.trim().to_string()), TokenSource::File(shown))
                    }
                    Ok(_) => (
                        None,
                        TokenSource::Missing {
                            file: Some(shown),
                            why: "it is empty".into(),
                        },
                    ),
                    Err(err) => (
                        None,
                        TokenSource::Missing {
                            file: Some(shown),
                            why: match err.kind() {
                                std::io::ErrorKind::NotFound => "it does not exist".into(),
                                std::io::ErrorKind::PermissionDenied => {
                                    "it is not readable by this user".into()
                                }
                                _ => err.to_string(),
                            },
                        },
                    ),
                }
            }
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            source,
            http,
        }
    }

    /// What to add to a 401 or 403 of the server: where the token was looked for, and how to
    /// give one.
    pub fn token_hint(&self, status: StatusCode) -> Option<String> {
        match (&self.source, status) {
            (TokenSource::Missing { file, why }, StatusCode::UNAUTHORIZED) => Some(match file {
                Some(file) => format!(
                    "no admin token: none given with --token or VIGIL_ADMIN_TOKEN, and {} {why} \
                     (the server writes its token there on first start; point --data-dir or \
                     VIGIL_DATA_DIR at the server's data directory)",
                    file.display()
                ),
                None => "no admin token given: pass --token or set VIGIL_ADMIN_TOKEN".into(),
            }),
            (TokenSource::File(file), StatusCode::UNAUTHORIZED) => Some(format!(
                "the admin token read from {} was refused: is that this server's data \
                 directory? (--data-dir, VIGIL_DATA_DIR, or give the token with --token)",
                file.display()
            )),
            (TokenSource::Given, StatusCode::UNAUTHORIZED) => {
                Some("the token given with --token or VIGIL_ADMIN_TOKEN was refused".into())
            }
            (TokenSource::Given, StatusCode::FORBIDDEN) => Some(
                "the token given with --token or VIGIL_ADMIN_TOKEN has a role that may not do \
                 this; admin calls need an admin token"
                    .into(),
            ),
            _ => None,
        }
    }

    /// Also trusts the certificate authorities of a PEM file.
    pub fn with_ca_file(mut self, path: &Path) -> Result<Client, CliError> {
        let failed = |reason: String| {
            CliError::usage(format!(
                "cannot use the CA file {}: {reason}",
                path.display()
            ))
        };
        let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
        let roots =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| failed(e.to_string()))?;
        if roots.is_empty() {
            return Err(failed("no CERTIFICATE in it".into()));
        }
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
        self.http = builder.build().map_err(|e| failed(root_cause(&e)))?;
        Ok(self)
    }

    /// The server's base URL, as given (without a trailing slash).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Adds the admin token, when there is one.
    pub fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Option<T>, CliError> {
        let url = format!("{}{}", self.base, path);
        let mut request = self.authorize(self.http.request(method, &url).query(query));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| CliError {
            message: format!(
                "cannot reach vigil server at {}: {}",
                self.base,
                root_cause(&e)
            ),
            exit_code: EXIT_UNREACHABLE,
        })?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let bytes = response.bytes().await.map_err(|e| CliError {
            message: format!("reading the answer of {url}: {}", root_cause(&e)),
            exit_code: EXIT_UNREACHABLE,
        })?;
        if !status.is_success() {
            let mut message = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => format!("{} ({})", body.error.message, body.error.code),
                Err(_) => format!("server answered {status}"),
            };
            if let Some(hint) = self.token_hint(status) {
                message = format!("{message}: {hint}");
            }
            return Err(CliError::refused(message));
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CliError::refused(format!("unexpected answer from {url}: {e}")))
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, CliError> {
        self.send::<T>(Method::GET, path, query, None::<&()>)
            .await?
            .ok_or_else(|| CliError::refused(format!("empty answer from {path}")))
    }

    pub async fn list(&self, query: &[(&str, String)]) -> Result<Vec<Service>, CliError> {
        Ok(self
            .get::<ServiceList>("/v1/services", query)
            .await?
            .services)
    }

    /// The service (host, binary), or an error that names it.
    pub async fn find(&self, host: &str, binary: &str) -> Result<Service, CliError> {
        let query = [("host", host.to_string()), ("binary", binary.to_string())];
        self.list(&query)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| CliError::refused(format!("no service {binary} on host {host}")))
    }

    pub async fn update(
        &self,
        id: i64,
        change: &UpdateServiceRequest,
    ) -> Result<Service, CliError> {
        self.send(
            Method::PATCH,
            &format!("/v1/services/{id}"),
            &[],
            Some(change),
        )
        .await?
        .ok_or_else(|| CliError::refused("empty answer to an update"))
    }

    /// `POST` or `DELETE` of an admin resource; the answer, if it has a body.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Option<T>, CliError> {
        self.send(method, path, &[], body).await
    }

    pub async fn delete(&self, id: i64, force: bool) -> Result<(), CliError> {
        let query = [("force", force.to_string())];
        self.send::<serde_json::Value>(
            Method::DELETE,
            &format!("/v1/services/{id}"),
            &query,
            None::<&()>,
        )
        .await
        .map(|_| ())
    }
}

/// The innermost error message (reqwest's outer ones say only "error sending request").
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
