//! Watching an existing OpenStack: reading Cinder's or Nova's own `services` table, read-only,
//! as one more source of heartbeats beside the HTTP API.
//!
//! A watch polls the table every `poll_interval`; [`diff`] turns two consecutive polls into
//! [`Change`]s (a heartbeat when `report_count` went up, counted at the poll's database time;
//! an admin change; a new row; a removed row), [`openstack_state`] gives OpenStack's own verdict
//! on each row, and each heartbeat carries the writer's [`ClockOffset`]. Nothing here touches
//! the registry: the server feeds the changes to it with `source` = the watch's name.
//!
//! **Invariant:** a watch never writes to the database it watches. Its sessions are read-only
//! (checked on every new connection), it runs only its two `SELECT`s, and its pool is small with
//! a statement timeout; see [`reader`].
//!
//! # Layout
//! - [`spec`]: `KIND:URL` (`--watch`, `VIGIL_WATCH`) and the `[[watch]]` table, [`WatchConfig`].
//! - [`reader`]: the read-only pool of one watch and one poll ([`WatchReader::poll`]), the only
//!   SQL of the watched databases; errors sorted into [`WatchError`].
//! - [`model`]: what a poll returns, [`Poll`] and [`WatchedRow`].
//! - [`diff`]: the pure difference of two polls.
//! - [`verdict`]: OpenStack's verdict as Cinder's and Nova's code computes it, the silent
//!   `service_down_time` rewrite, the clock offset and its bound.
//! - [`Watcher`]: a reader and its previous poll: one [`Watcher::step`] per `poll_interval`.

#[cfg(feature = "bench")]
pub mod bench_fixture;
pub mod diff;
pub mod model;
pub mod reader;
pub mod spec;
pub mod verdict;

pub use diff::{diff, Change};
pub use model::{AdminFields, Poll, WatchedRow};
pub use reader::WatchReader;
pub use spec::{Engine, WatchConfig, WatchKind};
pub use verdict::{
    openstack_state, rewritten_service_down_time, shown_updated_at, ClockOffset, OpenstackState,
};

/// Why a watch could not be set up or could not poll. Each names the watch; URLs have their
/// password replaced by `***`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WatchError {
    /// A `--watch` value or `[[watch]]` table that cannot work; stops start-up.
    #[error("malformed watch {value:?}: {reason}")]
    Malformed { value: String, reason: String },
    /// The database could not be reached or refused us (down, wrong address, credentials, no
    /// such database). Retried at the next poll.
    #[error("watch {name}: database {url} is unreachable: {reason}")]
    Unreachable {
        name: String,
        url: String,
        reason: String,
    },
    /// The database answered, but its `services` table is not the kind's (missing, or missing
    /// columns, or other types: not Cinder's or Nova's, or the other one's).
    #[error("watch {name}: {url} has no {kind} services table: {reason}")]
    NotOpenStack {
        name: String,
        url: String,
        kind: WatchKind,
        reason: String,
    },
    /// A new session did not report itself read-only; it was not used.
    #[error("watch {name}: the session is not read-only, so it was not used: {reason}")]
    NotReadOnly { name: String, reason: String },
    /// The poll outlasted the statement timeout.
    #[error("watch {name}: the poll took longer than {seconds} s")]
    Timeout { name: String, seconds: f64 },
    /// Any other failed statement (a write refused as read-only among them).
    #[error("watch {name}: query failed: {reason}")]
    Query { name: String, reason: String },
}

/// A [`WatchReader`] and what it saw last.
#[derive(Debug)]
pub struct Watcher {
    reader: WatchReader,
    last: Option<Poll>,
}

/// What one [`Watcher::step`] saw.
#[derive(Debug, Clone)]
pub struct Step {
    /// This poll.
    pub poll: Poll,
    /// The changes since the previous successful poll (every row is [`Change::New`] on the
    /// first).
    pub changes: Vec<Change>,
}

impl Watcher {
    /// A watcher that has not polled yet.
    pub fn new(reader: WatchReader) -> Watcher {
        Watcher { reader, last: None }
    }

    /// The reader.
    pub fn reader(&self) -> &WatchReader {
        &self.reader
    }

    /// The last successful poll.
    pub fn last(&self) -> Option<&Poll> {
        self.last.as_ref()
    }

    /// Polls once and diffs against the last successful poll. A failed poll changes nothing:
    /// the next success is diffed against the poll before it, so no heartbeat is lost, only
    /// dated later.
    pub async fn step(&mut self) -> Result<Step, WatchError> {
        let poll = self.reader.poll().await?;
        let changes = diff(self.last.as_ref(), &poll);
        self.last = Some(poll.clone());
        Ok(Step { poll, changes })
    }
}
