//! Building the shared state at start-up: the store opened, every service loaded, the clock
//! set, and the grace after the gap since this database was last watched.

use std::sync::Arc;

use super::sync::SyncState;
use super::watch::WatchState;
use super::{App, DatabaseHealth};
use crate::config::Config;
use crate::detector::Detector;
use crate::events::EventLog;
use crate::liveness::Liveness;
use crate::registry::Registry;
use crate::store::{self, Store};
use crate::{admin_token, agent_token, doctor, open_store, redact, Clock, ServerError};

/// Builds the shared state: opens the store, loads every service, sets the clock and the
/// grace after the gap since this database was last watched.
pub(crate) async fn build(
    config: Config,
) -> Result<
    (
        Arc<App>,
        tokio::sync::mpsc::UnboundedReceiver<store::NewEvent>,
    ),
    ServerError,
> {
    config.validate()?;
    doctor::log_config(&config);
    // The store first: a server that cannot start leaves no token behind.
    let store = open_store(&config).await?;
    let admin_token = admin_token(&config)?;
    let agent_token = agent_token(&config)?;
    let tokens = crate::auth::Tokens::new(
        &admin_token,
        Some(&agent_token),
        crate::auth::Policy {
            anonymous_read: config.auth.anonymous_read,
            open_registration: config.auth.open_registration,
        },
    );
    let clock = Clock::new(config.clock_offset);
    super::sync::calibrate(&clock, store.as_ref(), true).await;
    let fail = |e: store::StoreError| {
        let reason = e.to_string();
        // The open's write probe passed, yet a write of the start-up found the file read-only
        // (it became so meanwhile, or only its journal is): the same plain error as the probe's.
        let reason = if reason.contains("attempt to write a readonly database") {
            format!("the database cannot be written: {reason}")
        } else {
            reason
        };
        ServerError::Database {
            url: redact(&config.database_url()),
            reason,
        }
    };
    // Cursors first: what is written between them and the load is read again, harmlessly.
    let row_cursor = store.change_cursor().await.map_err(fail)?;
    let beat_cursor = store.beat_cursor().await.map_err(fail)?;
    let newest_event = store
        .list_events(&store::EventFilter {
            limit: 1,
            ..store::EventFilter::default()
        })
        .await
        .map_err(fail)?;
    let event_cursor = newest_event.first().map_or(0, |e| e.id);
    let liveness = Liveness::new(config.service_down_time, config.phi_threshold)
        .with_patterns(&config.service_down_time_by_binary)
        .with_flapping(crate::flapping::FlapRule::new(
            config.flapping.transitions,
            config.flapping.window,
        ))
        .with_up_after_beats(config.flapping.up_after_beats);
    let registry = Registry::new(Vec::new(), liveness);
    store
        .load_services(&mut |page| registry.insert_loaded(page))
        .await
        .map_err(fail)?;
    tokens.replace(&store.list_tokens().await.map_err(fail)?, 0);
    let now = clock.now();
    open_grace(&config, store.as_ref(), &registry.liveness, now)
        .await
        .map_err(fail)?;
    tracing::info!(services = registry.len(), "loaded services");
    let windows = store.list_maintenance(Some(now)).await.map_err(fail)?;
    registry.maintenance.replace(windows, 0);
    let mut watches: Vec<Arc<WatchState>> = Vec::new();
    for watch in &config.watch {
        let watch = watch
            .clone()
            .with_conf()
            .map_err(|e| ServerError::Config(crate::ConfigError(e.to_string())))?;
        watches.push(Arc::new(WatchState::new(watch)));
    }
    for (i, watch) in watches.iter().enumerate() {
        if let Some(other) = watches[..i].iter().find(|o| o.clashes_with(watch)) {
            return Err(ServerError::Config(crate::ConfigError(format!(
                "watches {} and {} would give their services the same ids; rename one",
                other.name, watch.name
            ))));
        }
    }
    let (events, receiver) = EventLog::new();
    let config_limits = config.limits.clone();
    let metrics =
        crate::metrics::Metrics::new(config.metrics.per_service, config.service_down_time);
    let guard = crate::guard::GuardRule {
        enabled: config.partition_guard.enabled,
        share: config.partition_guard.share,
        min_services: config.partition_guard.min_services,
        hold: crate::model::delta(config.partition_guard.hold),
    };
    let app = Arc::new(App {
        config,
        clock,
        store,
        registry,
        events: Arc::new(events),
        detector: Detector::with_guard(guard),
        sync: tokio::sync::Mutex::new(SyncState::new(row_cursor, event_cursor)),
        beat_cursor: tokio::sync::Mutex::new(beat_cursor),
        tokens,
        limits: crate::limits::WriteLimits::new(
            config_limits.writes_per_second,
            config_limits.write_burst,
        ),
        database: DatabaseHealth::default(),
        metrics,
        watches,
    });
    Ok((app, receiver))
}

/// Meta key of the grace period the last server to start opened: `last_alive resumed_at`.
const GRACE: &str = "grace";

/// The grace after a start: unless another server was watching all along (and so received
/// the heartbeats that this one could not), nobody watched from the last flush of the last
/// server to now, however short that was; services up then get a full `service_down_time`
/// from now to beat again. The gap is stored, so that replicas starting meanwhile keep it too.
async fn open_grace(
    config: &Config,
    store: &dyn Store,
    liveness: &Liveness,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), store::StoreError> {
    let parse = |text: &str| {
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    if store.watched_by_others().await? {
        // Another replica leads: keep the grace it opened, if that still runs.
        let stored = store.get_meta(GRACE).await?;
        let gap = stored.as_deref().and_then(|text| {
            let (last_alive, resumed_at) = text.split_once(' ')?;
            Some((parse(last_alive)?, parse(resumed_at)?))
        });
        if let Some((last_alive, resumed_at)) = gap {
            if resumed_at + liveness.service_down_time > now {
                liveness.set_gap(last_alive, resumed_at);
            }
        }
        return Ok(());
    }
    let Some(last_alive) = store
        .get_meta(store::LAST_ALIVE)
        .await?
        .as_deref()
        .and_then(parse)
    else {
        return Ok(());
    };
    let last_alive = last_alive.min(now);
    liveness.set_gap(last_alive, now);
    let text = format!(
        "{} {}",
        vigil_proto::ts::format(&last_alive),
        vigil_proto::ts::format(&now)
    );
    store.set_meta(GRACE, &text).await?;
    tracing::info!(
        unwatched_s = crate::model::seconds(now - last_alive),
        grace_s = config.service_down_time,
        "nobody watched since the last flush: services that were up get a grace period to beat again"
    );
    Ok(())
}
