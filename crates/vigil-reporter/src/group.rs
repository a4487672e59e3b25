//! [`ReporterGroup`]: several services of one process reporting through one loop, their beats
//! sent together in one `POST /v1/heartbeats` per tick.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::instrument::WithSubscriber;
use tracing::Instrument;
use vigil_proto::{BatchBeat, BatchHeartbeatRequest, BatchHeartbeatResponse, MAX_BATCH_BEATS};

use crate::error::ReporterError;
use crate::looping::{stop_requested, Tick};
use crate::reporter::{http_client, Prepared, ReporterBuilder, ReporterHandle};
use crate::session::{read, Session, Status};

/// Entry point: `ReporterGroup::builder()`, then one [`ReporterBuilder`] per service.
///
/// Every service keeps what a lone [`crate::Reporter`] does: its own `report_interval`, health
/// check, registration (and registration again when deleted on the server), and its
/// `last_error`. What the group changes is the transport: on each tick, the beats of every
/// service then due go in one request, `POST /v1/heartbeats`, and the services share the
/// connection and its outage (logged once for the group, and the recovery once). A service is
/// due when its next beat is at most a tenth of its interval away, so services of one interval
/// started together always share their requests, and services of different intervals share
/// them whenever their beats fall together. The server must know `POST /v1/heartbeats`
/// (Vigil's batch heartbeats); an older one refuses every batch, which each service logs as a
/// refused heartbeat.
///
/// ```no_run
/// use std::time::Duration;
/// use vigil_reporter::{Reporter, ReporterGroup};
///
/// # fn main() -> Result<(), vigil_reporter::ReporterError> {
/// let url = "http://127.0.0.1:8799";
/// let group = ReporterGroup::builder()
///     .service(Reporter::builder(url, "node-1", "cinder-volume"))
///     .service(Reporter::builder(url, "node-1", "cinder-backup").report_interval(Duration::from_secs(5)))
///     .start()?;
/// println!("registered as {:?}", group.service_ids());
/// group.stop();
/// group.wait();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ReporterGroup {
    _private: (),
}

impl ReporterGroup {
    /// An empty group; add its services with [`ReporterGroupBuilder::service`].
    pub fn builder() -> ReporterGroupBuilder {
        ReporterGroupBuilder {
            services: Vec::new(),
        }
    }
}

/// Configures a group; finish with [`ReporterGroupBuilder::start`] or
/// [`ReporterGroupBuilder::start_on`].
#[must_use = "a reporter group does nothing until started"]
pub struct ReporterGroupBuilder {
    services: Vec<ReporterBuilder>,
}

impl fmt::Debug for ReporterGroupBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReporterGroupBuilder")
            .field("services", &self.services)
            .finish()
    }
}

impl ReporterGroupBuilder {
    /// Adds a service, configured as a lone reporter would be. Every service of a group must
    /// name the same server URL and token; the group's first beat comes one interval after
    /// the start, delayed by the largest of the services' `fuzzy_delay`s.
    pub fn service(mut self, service: ReporterBuilder) -> Self {
        self.services.push(service);
        self
    }

    /// Starts the group on its own OS thread, as [`ReporterBuilder::start`] does for one
    /// service.
    pub fn start(self) -> Result<ReporterGroupHandle, ReporterError> {
        let (handle, drive, done) = self.prepare()?.into_parts();
        let thread = crate::reporter::on_own_thread(drive, done)?;
        Ok(ReporterGroupHandle {
            statuses: handle.statuses,
            handle: handle.handle.with_thread(thread),
        })
    }

    /// Starts the group as a task on the given runtime, as [`ReporterBuilder::start_on`].
    pub fn start_on(
        self,
        runtime: &tokio::runtime::Handle,
    ) -> Result<ReporterGroupHandle, ReporterError> {
        let (handle, drive, done) = self.prepare()?.into_parts();
        crate::reporter::on_runtime(runtime, drive, done);
        Ok(handle)
    }

    fn prepare(self) -> Result<PreparedGroup, ReporterError> {
        if self.services.is_empty() {
            return Err(ReporterError::EmptyGroup);
        }
        if self.services.len() > MAX_BATCH_BEATS {
            return Err(ReporterError::GroupTooLarge {
                services: self.services.len(),
            });
        }
        // One client for all: one connection pool, one TLS setup (the first service's CA file).
        let client = http_client(self.services[0].ca_file_path())?;
        let services = self
            .services
            .into_iter()
            .map(|service| service.prepare_with(client.clone()))
            .collect::<Result<Vec<Prepared>, _>>()?;
        let first = &services[0].config;
        for other in &services[1..] {
            if other.config.base_url != first.base_url {
                return Err(ReporterError::InvalidUrl {
                    url: other.config.base_url.clone(),
                    reason: format!(
                        "every service of a group reports to one server, here {}",
                        first.base_url
                    ),
                });
            }
            if other.config.token != first.token {
                return Err(ReporterError::GroupTokens);
            }
        }
        Ok(PreparedGroup { services })
    }
}

struct PreparedGroup {
    services: Vec<Prepared>,
}

impl PreparedGroup {
    fn into_parts(
        self,
    ) -> (
        ReporterGroupHandle,
        impl std::future::Future<Output = ()> + Send + 'static,
        crate::reporter::Done,
    ) {
        let connected = Arc::new(AtomicBool::new(true));
        let client = self.services[0].client.clone();
        let base_url = self.services[0].config.base_url.clone();
        let fuzzy = self
            .services
            .iter()
            .filter_map(|s| s.fuzzy_delay)
            .max()
            .unwrap_or(Duration::ZERO);
        let mut statuses = Vec::new();
        let mut members = Vec::new();
        for service in self.services {
            let status = Arc::new(Status::default());
            statuses.push(status.clone());
            let span = tracing::info_span!(
                "vigil_reporter",
                host = %service.config.register.host,
                binary = %service.config.register.binary,
            );
            members.push(Member {
                interval: service.config.interval,
                budget: service.config.tick_budget,
                next_due: Instant::now(),
                overrun: Duration::ZERO,
                session: Session::sharing(
                    service.config,
                    client.clone(),
                    status,
                    connected.clone(),
                ),
                span,
            });
        }
        let (handle, stopped, silent, done) = ReporterHandle::create(statuses[0].clone());
        let span =
            tracing::info_span!("vigil_reporter_group", url = %base_url, services = members.len());
        let drive = drive(members, base_url, fuzzy, stopped, silent)
            .instrument(span)
            .with_current_subscriber();
        (ReporterGroupHandle { statuses, handle }, drive, done)
    }
}

/// One service of a running group.
struct Member {
    session: Session,
    interval: Duration,
    budget: Duration,
    /// When its next beat is due.
    next_due: Instant,
    /// How long its previous run outlasted its interval.
    overrun: Duration,
    span: tracing::Span,
}

/// Registers every service, then beats each at its interval, those due together in one batch;
/// once stopped, tells the server each service stops, unless stopped silently.
async fn drive(
    mut members: Vec<Member>,
    base_url: String,
    fuzzy: Duration,
    stopped: watch::Receiver<bool>,
    silent: Arc<AtomicBool>,
) {
    beat(&mut members, base_url, fuzzy, stopped).await;
    if !silent.load(Ordering::Relaxed) {
        for member in &mut members {
            let span = member.span.clone();
            member.session.announce_stop().instrument(span).await;
        }
    }
}

/// Registers every service, then beats each at its interval until stopped.
async fn beat(
    members: &mut [Member],
    base_url: String,
    fuzzy: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    for member in members.iter_mut() {
        let span = member.span.clone();
        tokio::select! {
            biased;
            () = stop_requested(&mut stopped) => return,
            () = member.session.register_at_start().instrument(span) => {}
        }
    }
    // As a lone reporter (and Cinder): the first beat comes one interval after the start.
    let start = Instant::now() + fuzzy.mul_f64(rand::random_range(0.0..=1.0));
    for member in members.iter_mut() {
        member.next_due = start + member.interval;
    }
    let url = format!("{base_url}/v1/heartbeats");
    loop {
        let Some(next) = members.iter().map(|m| m.next_due).min() else {
            return;
        };
        tokio::select! {
            biased;
            () = stop_requested(&mut stopped) => return,
            () = tokio::time::sleep_until(next) => {}
        }
        let began = Instant::now();
        let due: Vec<usize> = members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.next_due <= began + m.interval / 10)
            .map(|(index, _)| index)
            .collect();
        tokio::select! {
            biased;
            () = stop_requested(&mut stopped) => return,
            () = run(members, &due, &url) => {}
        }
        let ended = Instant::now();
        for &index in &due {
            let member = &mut members[index];
            member.overrun = (ended - began).saturating_sub(member.interval);
            member.next_due += member.interval;
            // A run that outlasted the interval skips the beats it missed, as the loop of a
            // lone reporter does.
            while member.next_due < ended {
                member.next_due += member.interval;
            }
        }
    }
}

/// One tick of the services `due`: their beats in one batch, then once more the beats of
/// those that were deleted on the server and registered again.
async fn run(members: &mut [Member], due: &[usize], url: &str) {
    let budget = due
        .iter()
        .map(|&index| members[index].budget)
        .min()
        .unwrap_or(Duration::ZERO);
    let deadline = Instant::now() + budget;
    let mut owners = due.to_vec();
    for first_try in [true, false] {
        let mut beats = Vec::new();
        let mut sending = Vec::new();
        for &index in &owners {
            let member = &mut members[index];
            let tick = Tick {
                overrun: member.overrun,
            };
            let span = member.span.clone();
            if let Some(beat) = member
                .session
                .batch_beat(tick, deadline)
                .instrument(span)
                .await
            {
                beats.push(beat);
                sending.push(index);
            }
        }
        if beats.is_empty() {
            return;
        }
        owners = send(members, &sending, beats, url, first_try).await;
        if owners.is_empty() {
            return;
        }
    }
}

/// Sends one batch for the services `owners` (in the order of `beats`) and hands each its
/// result; returns those to send again (registered again after a `service_not_found`).
async fn send(
    members: &mut [Member],
    owners: &[usize],
    beats: Vec<BatchBeat>,
    url: &str,
    first_try: bool,
) -> Vec<usize> {
    let count = beats.len();
    let started = Instant::now();
    let sent = members[owners[0]]
        .session
        .post(url, &BatchHeartbeatRequest { beats })
        .send()
        .await;
    let answer = match read::<BatchHeartbeatResponse>(sent).await {
        Ok(answer) if answer.results.len() == count => answer,
        Ok(answer) => {
            let message = format!(
                "unreadable answer: {} results for {count} beats",
                answer.results.len()
            );
            for &index in owners {
                let span = members[index].span.clone();
                let _entered = span.enter();
                members[index]
                    .session
                    .failed_with("heartbeat", false, &message);
            }
            return Vec::new();
        }
        Err(err) => {
            let (outage, message) = (err.is_outage(), err.to_string());
            for &index in owners {
                let span = members[index].span.clone();
                let _entered = span.enter();
                members[index]
                    .session
                    .failed_with("heartbeat", outage, &message);
            }
            return Vec::new();
        }
    };
    let rtt = started.elapsed();
    let mut again = Vec::new();
    for (&index, result) in owners.iter().zip(answer.results) {
        let member = &mut members[index];
        let span = member.span.clone();
        if member
            .session
            .batch_result(result, answer.service_down_time, rtt, first_try)
            .instrument(span)
            .await
        {
            again.push(index);
        }
    }
    again
}

/// A running group: the ids and counts of its services, in the order they were added, and the
/// same stop, wait and shutdown as a [`ReporterHandle`]. Dropping it stops the group.
#[derive(Debug)]
pub struct ReporterGroupHandle {
    statuses: Vec<Arc<Status>>,
    handle: ReporterHandle,
}

impl ReporterGroupHandle {
    /// Each service's id on the server, once registered, in the order they were added.
    pub fn service_ids(&self) -> Vec<Option<i64>> {
        self.statuses.iter().map(|s| s.service_id()).collect()
    }

    /// Each service's `report_count` from its last acknowledged beat (or registration).
    pub fn report_counts(&self) -> Vec<i64> {
        self.statuses.iter().map(|s| s.report_count()).collect()
    }

    /// Asks the group to stop; see [`ReporterHandle::stop`].
    pub fn stop(&self) {
        self.handle.stop();
    }

    /// Stops the group without telling the server; see [`ReporterHandle::stop_silently`].
    pub fn stop_silently(&self) {
        self.handle.stop_silently();
    }

    /// Blocks until the group has ended; see [`ReporterHandle::wait`].
    pub fn wait(self) {
        self.handle.wait();
    }

    /// Stops the group and waits until it has ended; see [`ReporterHandle::shutdown`].
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
    }
}
