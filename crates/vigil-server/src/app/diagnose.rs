//! `App::diagnose`: gathers one service's facts for the doctor ([`crate::doctor`]).

use chrono::{DateTime, Utc};
use vigil_proto::Diagnosis;

use super::{App, AppError};
use crate::doctor::{diagnose, Inputs, Openstack, RECENT};
use crate::model::{Event, EventKind, ServiceRecord};
use crate::store::EventFilter;
use crate::watch::WatchConfig;

impl App {
    /// Gathers one service's facts and runs [`diagnose`] on them. A history that cannot be read
    /// degrades the checks that need it instead of failing the whole diagnosis: the doctor is
    /// needed most when something is broken.
    pub async fn diagnose(&self, id: i64) -> Result<Diagnosis, AppError> {
        let entry = self.entry(id).await?;
        let now = self.clock.now();
        let rule = self.registry.liveness.flapping;
        let up_after_beats = self.registry.liveness.up_after_beats;
        // Before the slot's lock: the episode's view locks the slots it holds.
        let mass_failure = self.mass_failure();
        let (service, record, stats, openstack, recent_transitions, reach, window) = {
            let slot = entry.lock();
            let openstack = slot.watched.as_ref().map(|watched| Openstack {
                kind: watched.kind,
                service_down_time: self
                    .watches
                    .iter()
                    .find(|w| w.name == watched.source)
                    .map_or(WatchConfig::OPENSTACK_SERVICE_DOWN_TIME, |w| {
                        w.config.openstack_service_down_time()
                    }),
            });
            (
                self.registry.view(&slot, now),
                slot.record.clone(),
                slot.stats.clone(),
                openstack,
                slot.flaps.count(now, &rule),
                crate::doctor::Reach {
                    unreachable: slot.unreachable,
                    mass_failure,
                    recovering: (slot.recovering > 0)
                        .then_some((u32::from(slot.recovering), up_after_beats)),
                },
                self.registry
                    .maintenance
                    .find(&slot.record.host, &slot.record.binary, now),
            )
        };
        let history = self.doctor_history(&record, now).await;
        let findings = diagnose(&Inputs {
            record: &record,
            stats: &stats,
            history: history.as_deref().map_err(String::as_str),
            service_down_time: openstack
                .as_ref()
                .map_or(self.registry.liveness.down_time_s(&record), |o| {
                    o.service_down_time
                }),
            now,
            openstack,
            recent_transitions,
            flapping: rule,
            reach,
            maintenance: window.as_deref(),
        });
        Ok(Diagnosis { service, findings })
    }

    /// The events the checks read: registrations within [`RECENT`], and the latest `disabled`
    /// and `forced_down` when the service is so (they may be older than any window).
    async fn doctor_history(
        &self,
        record: &ServiceRecord,
        now: DateTime<Utc>,
    ) -> Result<Vec<Event>, String> {
        let of = |kind: EventKind, since: Option<DateTime<Utc>>, limit: i64| EventFilter {
            service_id: Some(record.id),
            kind: Some(kind),
            since,
            limit,
            ..EventFilter::default()
        };
        let mut filters = vec![of(EventKind::Registered, Some(now - RECENT), 100)];
        if record.disabled {
            filters.push(of(EventKind::Disabled, None, 1));
        }
        if record.forced_down {
            filters.push(of(EventKind::ForcedDown, None, 1));
        }
        let mut history = Vec::new();
        for filter in filters {
            let events = self
                .store
                .list_events(&filter)
                .await
                .map_err(|e| e.to_string())?;
            history.extend(events);
        }
        Ok(history)
    }
}
