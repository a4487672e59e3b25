//! `vigil watch`: the history as it happens, one line per event, until Ctrl-C.
//!
//! Reads the server's Server-Sent Events stream (`GET /v1/events/stream`). The stream is
//! resumable by event id, so when the connection drops (a server restart, a network blip) the
//! watcher connects again with `Last-Event-ID` set to the last id it printed: nothing is missed,
//! and anything the server might send twice is dropped here by id, so nothing is repeated.

use std::io::Write as _;
use std::time::Duration;

use reqwest::StatusCode;
use vigil_proto::{ts, ErrorBody, Event};

use crate::client::{root_cause, CliError, Client, ServerOpts, EXIT_UNREACHABLE};
use crate::table;

/// First wait before connecting again; doubled after each failure up to [`MAX_BACKOFF`].
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
    let client = args.server.client();
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
    let mut backoff = MIN_BACKOFF;
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
                backoff = MIN_BACKOFF;
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
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
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
    let message = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(body) => format!("{} ({})", body.error.message, body.error.code),
        Err(_) => format!("server answered {status}"),
    };
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(ConnectError::Transient(CliError::refused(message)))
    } else {
        Err(ConnectError::Refused(CliError::refused(message)))
    }
}

/// Prints the events of one connection until it ends or the watch is over.
async fn read(mut response: reqwest::Response, printer: &mut Printer) -> Stop {
    let mut parser = SseParser::default();
    loop {
        let chunk = match tokio::time::timeout(SILENCE, response.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => return Stop::Lost("the server closed it".into()),
            Ok(Err(err)) => return Stop::Lost(root_cause(&err)),
            Err(_) => return Stop::Lost(format!("nothing heard for {} s", SILENCE.as_secs())),
        };
        let messages = match parser.push(&chunk) {
            Ok(messages) => messages,
            Err(err) => return Stop::Lost(err),
        };
        for message in messages {
            if printer.print(&message).is_break() {
                return Stop::Done;
            }
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
    /// Prints one message; `Break` when the watch is over.
    fn print(&mut self, message: &SseMessage) -> std::ops::ControlFlow<()> {
        use std::ops::ControlFlow::{Break, Continue};
        let id = message
            .id
            .as_deref()
            .and_then(|id| id.trim().parse::<i64>().ok());
        if let (Some(id), Some(last)) = (id, self.last_id) {
            if id <= last {
                return Continue(());
            }
        }
        let event: Event = match serde_json::from_str(&message.data) {
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

/// One dispatched Server-Sent Event.
#[derive(Debug, Default, PartialEq)]
struct SseMessage {
    /// The last `id:` seen so far, in this event or an earlier one (as the standard says).
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Incremental parser of a `text/event-stream` body, as the HTML standard specifies it: lines
/// end with CRLF, LF or CR (which may straddle chunks); `:` starts a comment (keep-alives);
/// `data:` lines accumulate; a blank line dispatches the event, unless it had no data.
#[derive(Debug, Default)]
struct SseParser {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    /// The previous chunk ended with CR: an LF starting this one belongs to it.
    after_cr: bool,
    /// The last event id; unlike the other fields it outlives the event that set it.
    last_id: Option<String>,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Feeds a chunk; returns the events it completed.
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseMessage>, String> {
        let mut messages = Vec::new();
        let mut bytes = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&bytes[..end]);
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
            if let Some(message) = self.line_ended(&line) {
                messages.push(message);
            }
            let crlf = bytes[end] == b'\r' && bytes.get(end + 1) == Some(&b'\n');
            if bytes[end] == b'\r' && end + 1 == bytes.len() {
                self.after_cr = true;
            }
            bytes = &bytes[end + if crlf { 2 } else { 1 }..];
        }
        self.line.extend_from_slice(bytes);
        if self.line.len() > MAX_LINE {
            return Err(format!(
                "a line of the stream is longer than {MAX_LINE} bytes"
            ));
        }
        Ok(messages)
    }

    fn line_ended(&mut self, line: &str) -> Option<SseMessage> {
        if line.is_empty() {
            let event = self.event.take();
            let data = std::mem::take(&mut self.data);
            return std::mem::take(&mut self.has_data).then(|| SseMessage {
                id: self.last_id.clone(),
                event,
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(text: &str, piece: usize) -> Vec<SseMessage> {
        let mut parser = SseParser::default();
        let mut messages = Vec::new();
        for chunk in text.as_bytes().chunks(piece) {
            messages.extend(parser.push(chunk).unwrap());
        }
        messages
    }

    #[test]
    fn events_keep_alives_and_multi_line_data_in_any_chunking() {
        let text = ": keep-alive\n\nid: 7\nevent: down\ndata: {\"a\":\ndata:1}\n\n\
                    :\r\nid:8\r\ndata: x\r\n\r\nid: 9\rdata: y\r\r";
        let expected = vec![
            SseMessage {
                id: Some("7".into()),
                event: Some("down".into()),
                data: "{\"a\":\n1}".into(),
            },
            SseMessage {
                id: Some("8".into()),
                event: None,
                data: "x".into(),
            },
            SseMessage {
                id: Some("9".into()),
                event: None,
                data: "y".into(),
            },
        ];
        for piece in 1..=text.len() {
            assert_eq!(parse_in_pieces(text, piece), expected, "pieces of {piece}");
        }
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_but_its_id_is_kept() {
        assert!(parse_in_pieces("id: 3\ndata: x\n", 4).is_empty());
        assert_eq!(
            parse_in_pieces("id: 3\nevent: up\n\ndata\n\n", 2),
            vec![SseMessage {
                id: Some("3".into()),
                event: None,
                data: String::new(),
            }]
        );
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut parser = SseParser::default();
        assert!(parser.push(&vec![b'x'; MAX_LINE + 1]).is_err());
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
