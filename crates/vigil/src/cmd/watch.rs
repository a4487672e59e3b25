//! `vigil watch`: the history as it happens, one line per event, until Ctrl-C.
//!
//! Reads the server's Server-Sent Events stream (`GET /v1/events/stream`). The stream is
//! resumable by event id, so when the connection drops (a server restart, a network blip) the
//! watcher connects again with `Last-Event-ID` set to the last id it printed: nothing is missed,
//! and anything the server might send twice is dropped here by id, so nothing is repeated.
//!
//! The stream is parsed by `eventsource-stream`; the waits between attempts come from `backon`
//! (exponential, with jitter, reset by each connection that succeeds).

use std::io::Write as _;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::StatusCode;
use vigil_proto::{ts, ErrorBody, Event};

use crate::client::{root_cause, CliError, Client, ServerOpts, EXIT_UNREACHABLE};
use crate::table;

/// First wait before connecting again; about doubled after each failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between attempts: short enough that a restarted server is picked up quickly.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest silence before the connection is given up for dead. The server sends a keep-alive
/// comment every 15 s; a server that vanished without closing the connection (a crashed or
/// paused machine) sends nothing at all.
const SILENCE: Duration = Duration::from_secs(45);
/// Longest line accepted from the stream, so that a wrong server cannot exhaust memory.
const MAX_LINE: usize = 1 << 20;
/// Longest kind (`forced_down`), so that the lines' columns align.
const KIND_WIDTH: usize = 11;

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub server: ServerOpts,
    #[command(flatten)]
    pub filters: super::events::EventFilters,
    /// Start after this event id, replaying the history since [default: only new events].
    #[arg(long, value_name = "ID")]
    pub from: Option<i64>,
    /// Exit after this many events.
    #[arg(long, hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Print each event as one line of JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: WatchArgs) -> Result<i32, CliError> {
    tokio::select! {
        result = follow(args) => result,
        _ = tokio::signal::ctrl_c() => Ok(0),
    }
}

/// Why reading the stream stopped.
enum Stop {
    /// `--count` events were printed, or stdout was closed: the watch is over.
    Done,
    /// The connection was lost; the reason is for the notice.
    Lost(String),
}

/// Why a connection attempt failed.
enum ConnectError {
    /// The server cannot be reached or is failing; worth trying again.
    Transient(CliError),
    /// The server refused the request itself (bad filter, wrong endpoint): it would again.
    Refused(CliError),
}

async fn follow(args: WatchArgs) -> Result<i32, CliError> {
    let client = args.server.client()?;
    // The shared client's overall timeout would cut every stream; only connecting is bounded.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let query = args.filters.query();
    let mut printer = Printer {
        json: args.json,
        left: args.count,
        last_id: args.from,
    };
    let mut connected_once = false;
    let mut backoff = backoff();
    loop {
        match connect(&client, &http, &query, printer.last_id).await {
            Ok(response) => {
                if connected_once {
                    match printer.last_id {
                        Some(id) => eprintln!("vigil: reconnected, resuming after event {id}"),
                        None => eprintln!("vigil: reconnected"),
                    }
                }
                connected_once = true;
                backoff = self::backoff();
                match read(response, &mut printer).await {
                    Stop::Done => return Ok(0),
                    Stop::Lost(reason) => {
                        eprintln!("vigil: lost the event stream ({reason}), reconnecting");
                    }
                }
            }
            Err(ConnectError::Refused(err)) => return Err(err),
            // A first connection that fails is reported as the other commands do.
            Err(ConnectError::Transient(err)) if !connected_once => return Err(err),
            Err(ConnectError::Transient(_)) => {}
        }
        tokio::time::sleep(backoff.next().unwrap_or(MAX_BACKOFF)).await;
    }
}

/// The waits between connection attempts: 0.5 s, 1 s, 2 s, 4 s, then 5 s, with jitter so that
/// many watchers of a restarted server do not reconnect in step; never gives up.
fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(MIN_BACKOFF)
        .with_max_delay(MAX_BACKOFF)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Opens the stream, resuming after `last_id` when there is one.
async fn connect(
    client: &Client,
    http: &reqwest::Client,
    query: &[(&str, String)],
    last_id: Option<i64>,
) -> Result<reqwest::Response, ConnectError> {
    let url = format!("{}/v1/events/stream", client.base());
    let mut request = client
        .authorize(http.get(&url).query(query))
        .header(reqwest::header::ACCEPT, "text/event-stream");
    if let Some(id) = last_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().await.map_err(|e| {
        ConnectError::Transient(CliError {
            message: format!(
                "cannot reach vigil server at {}: {}",
                client.base(),
                root_cause(&e)
            ),
            exit_code: EXIT_UNREACHABLE,
        })
    })?;
    let status = response.status();
    if status.is_success() {
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("text/event-stream") {
            return Err(ConnectError::Refused(CliError::refused(format!(
                "{url} answered {content_type:?}, not an event stream: is this a vigil server?"
            ))));
        }
        return Ok(response);
    }
    let body = response.bytes().await.unwrap_or_default();
    let mut message = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(body) => format!("{} ({})", body.error.message, body.error.code),
        Err(_) => format!("server answered {status}"),
    };
    if let Some(hint) = client.token_hint(status) {
        message = format!("{message}: {hint}");
    }
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(ConnectError::Transient(CliError::refused(message)))
    } else {
        Err(ConnectError::Refused(CliError::refused(message)))
    }
}

/// Why the bytes of a stream stopped coming.
#[derive(Debug)]
enum ReadError {
    Transport(reqwest::Error),
    /// A line longer than [`MAX_LINE`]: not a Vigil server, or a broken one.
    LineTooLong,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Transport(err) => f.write_str(&root_cause(err)),
            ReadError::LineTooLong => {
                write!(f, "a line of the stream is longer than {MAX_LINE} bytes")
            }
        }
    }
}

/// Passes the body's chunks on, failing once a line grows past [`MAX_LINE`], so that a wrong
/// server cannot make the parser buffer without end.
fn bounded_lines<S, B>(chunks: S) -> impl Stream<Item = Result<B, ReadError>>
where
    S: Stream<Item = Result<B, ReadError>>,
    B: AsRef<[u8]>,
{
    let mut line = 0usize;
    chunks.map(move |chunk| {
        let chunk = chunk?;
        let bytes = chunk.as_ref();
        line = match bytes.iter().rposition(|&b| b == b'\n' || b == b'\r') {
            Some(end) => bytes.len() - end - 1,
            None => line + bytes.len(),
        };
        if line > MAX_LINE {
            return Err(ReadError::LineTooLong);
        }
        Ok(chunk)
    })
}

/// Prints the events of one connection until it ends or the watch is over.
async fn read(response: reqwest::Response, printer: &mut Printer) -> Stop {
    let chunks = response
        .bytes_stream()
        .map(|chunk| chunk.map_err(ReadError::Transport));
    let mut events = std::pin::pin!(bounded_lines(chunks).eventsource());
    loop {
        let event = match tokio::time::timeout(SILENCE, events.next()).await {
            Ok(Some(Ok(event))) => event,
            Ok(None) => return Stop::Lost("the server closed it".into()),
            Ok(Some(Err(EventStreamError::Transport(err)))) => return Stop::Lost(err.to_string()),
            Ok(Some(Err(err))) => return Stop::Lost(format!("unreadable stream: {err}")),
            Err(_) => return Stop::Lost(format!("nothing heard for {} s", SILENCE.as_secs())),
        };
        if printer.print(&event.id, &event.data).is_break() {
            return Stop::Done;
        }
    }
}

/// Prints events once each, and counts them for `--count`.
struct Printer {
    json: bool,
    /// Events still to print before exiting (`--count`).
    left: Option<u64>,
    /// Id of the last event printed: where a new connection resumes.
    last_id: Option<i64>,
}

impl Printer {
    /// Prints one message (its `id:` and `data:`); `Break` when the watch is over.
    fn print(&mut self, id: &str, data: &str) -> std::ops::ControlFlow<()> {
        use std::ops::ControlFlow::{Break, Continue};
        let id = id.trim().parse::<i64>().ok();
        if let (Some(id), Some(last)) = (id, self.last_id) {
            if id <= last {
                return Continue(());
            }
        }
        let event: Event = match serde_json::from_str(data) {
            Ok(event) => event,
            Err(err) => {
                eprintln!("vigil: skipping a message that is not an event: {err}");
                return Continue(());
            }
        };
        self.last_id = Some(id.unwrap_or(event.id));
        let line = if self.json {
            serde_json::to_string(&event).unwrap_or_default()
        } else {
            line(&event)
        };
        // A closed stdout (`vigil watch | head`) ends the watch quietly.
        if writeln!(std::io::stdout().lock(), "{line}").is_err() {
            return Break(());
        }
        if let Some(left) = &mut self.left {
            *left = left.saturating_sub(1);
            if *left == 0 {
                return Break(());
            }
        }
        Continue(())
    }
}

/// `2026-11-25T11:00:00.123456Z  down         cinder-volume@node-1  last seen ..., threshold 60 s`
fn line(event: &Event) -> String {
    let line = format!(
        "{}  {:<KIND_WIDTH$}  {}@{}  {}",
        ts::format(&event.at),
        event.kind,
        event.binary,
        event.host,
        table::event_detail(event)
    );
    line.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (id, event, data) of each event the parser gives for `text` cut into `piece`-byte chunks.
    async fn parse_in_pieces(text: &str, piece: usize) -> Vec<(String, String, String)> {
        let chunks: Vec<Result<Vec<u8>, ReadError>> = text
            .as_bytes()
            .chunks(piece)
            .map(|c| Ok(c.to_vec()))
            .collect();
        let stream = bounded_lines(futures_util::stream::iter(chunks)).eventsource();
        stream
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                (e.id, e.event, e.data)
            })
            .collect()
    }

    #[tokio::test]
    async fn events_keep_alives_and_multi_line_data_in_any_chunking() {
        // LF and CRLF line ends (the server sends LF), comments as keep-alives, data over two
        // lines, an id that stays for the events after it.
        let text = ": keep-alive\n\nid: 7\nevent: down\ndata: {\"a\":\ndata:1}\n\n\
                    :\r\nid:8\r\ndata: x\r\n\r\ndata: y\n\n";
        let expected = vec![
            (
                "7".to_string(),
                "down".to_string(),
                "{\"a\":\n1}".to_string(),
            ),
            ("8".to_string(), "message".to_string(), "x".to_string()),
            ("8".to_string(), "message".to_string(), "y".to_string()),
        ];
        for piece in 1..=text.len() {
            assert_eq!(
                parse_in_pieces(text, piece).await,
                expected,
                "pieces of {piece}"
            );
        }
    }

    #[tokio::test]
    async fn an_endless_line_is_refused() {
        let chunks: Vec<Result<Vec<u8>, ReadError>> =
            vec![Ok(b"data: ".to_vec()), Ok(vec![b'x'; MAX_LINE])];
        let results: Vec<_> = bounded_lines(futures_util::stream::iter(chunks))
            .collect::<Vec<_>>()
            .await;
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(ReadError::LineTooLong)));
        // Long lines that end are fine.
        let mut ok = vec![b'x'; MAX_LINE - 1];
        ok.push(b'\n');
        let chunks: Vec<Result<Vec<u8>, ReadError>> = vec![Ok(ok.clone()), Ok(ok)];
        let results: Vec<_> = bounded_lines(futures_util::stream::iter(chunks))
            .collect::<Vec<_>>()
            .await;
        assert!(results.iter().all(Result::is_ok));
    }

    #[test]
    fn the_backoff_grows_to_its_ceiling_and_never_ends() {
        let waits: Vec<Duration> = backoff().take(20).collect();
        assert_eq!(waits.len(), 20);
        assert!(
            waits[0] >= MIN_BACKOFF && waits[0] < MIN_BACKOFF * 2,
            "{waits:?}"
        );
        assert!(waits.iter().all(|w| *w <= MAX_BACKOFF * 2), "{waits:?}");
        assert!(waits[10..].iter().all(|w| *w >= MAX_BACKOFF), "{waits:?}");
    }

    #[test]
    fn a_down_line_shows_the_evidence() {
        let event: Event = serde_json::from_value(serde_json::json!({
            "id": 4, "service_id": 1, "host": "node-1", "binary": "cinder-volume",
            "kind": "down", "at": "2026-11-25T11:00:00.123456Z", "reason": null,
            "last_seen": "2026-11-25T10:59:00.000001Z", "threshold_s": 60.0
        }))
        .unwrap();
        assert_eq!(
            line(&event),
            "2026-11-25T11:00:00.123456Z  down         cinder-volume@node-1  \
             last seen 2026-11-25T10:59:00.000001Z, threshold 60 s"
        );
    }
}
