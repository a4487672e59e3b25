//! The watch reader against real OpenStack: the Cinder control plane of `openstack.rs` on
//! MariaDB and on PostgreSQL, Nova's `services` table made by Nova's own model and
//! heartbeated the way Nova's servicegroup `db` driver does, and SQLite. Every write through a
//! watch's pool is refused.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::Connection;
use vigil_server::watch::{
    openstack_state, Change, OpenstackState, WatchConfig, WatchError, WatchKind, WatchReader,
    Watcher,
};

use crate::harness::{temp_dir, Backend, EventStream, TestServer};
use crate::openstack::{
    self, cinder_on_mariadb, cinder_on_postgres, Plane, HOST_A, HOST_C, REPORT_INTERVAL,
    SERVICE_DOWN_TIME, SKEWED_HOST, SKEW_S,
};

/// Polls in these tests: half the default, to keep them short.
const POLL: f64 = 1.0;

fn config(kind: WatchKind, url: &str) -> WatchConfig {
    WatchConfig {
        kind,
        url: url.to_owned(),
        name: None,
        poll_interval: POLL,
        service_down_time: Some(SERVICE_DOWN_TIME),
        report_interval: Some(REPORT_INTERVAL),
        conf: None,
    }
}

/// What the watcher saw of one host over a run of polls.
#[derive(Debug, Default)]
struct Seen {
    heartbeats: Vec<(usize, i64)>,
    offsets: Vec<vigil_server::watch::ClockOffset>,
    admin: Vec<Change>,
}

/// The Cinder story on one plane: every scheduler seen and beating, the skewed one's offset
/// near +75 s and Cinder's own verdict `down` while it keeps beating, a killed scheduler's
/// `report_count` stopping, a `cinder service-disable --reason` through the real API seen as an
/// admin change.
async fn cinder_story(plane: &Plane) {
    // Vigil itself watching the same database, beside the bare watcher below.
    let dir = temp_dir();
    let mut server_config = Backend::Sqlite.config(dir.path());
    server_config.service_down_time = SERVICE_DOWN_TIME;
    // The intervals read from the plane's own cinder.conf, as an operator would point to it.
    server_config.watch = vec![WatchConfig {
        report_interval: None,
        service_down_time: None,
        conf: Some(plane.dir.join("cinder.conf")),
        ..config(WatchKind::Cinder, &plane.url)
    }];
    let server = TestServer::start(server_config).await;
    let mut downs = EventStream::connect(&server, &format!("?host={HOST_C}&kind=down"), None).await;
    let reader = WatchReader::new(config(WatchKind::Cinder, &plane.url)).unwrap();
    assert_eq!(reader.name(), format!("cinder/{}", plane.database));
    let mut watcher = Watcher::new(reader);
    let first = watcher.step().await.expect("first poll");
    let id_of: HashMap<String, i64> = first
        .poll
        .rows
        .iter()
        .filter(|r| r.binary == "cinder-scheduler")
        .map(|r| (r.host.clone(), r.id))
        .collect();
    for host in [HOST_A, SKEWED_HOST, HOST_C] {
        assert!(
            id_of.contains_key(host),
            "{host} not in {:?}",
            first.poll.rows
        );
    }
    assert!(first
        .changes
        .iter()
        .all(|c| matches!(c, Change::New { .. })));
    let host_of: HashMap<i64, String> = id_of.iter().map(|(h, id)| (*id, h.clone())).collect();

    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut last = first.poll.clone();
    const POLLS: usize = 10;
    const KILL_AT: usize = 3;
    let mut kill_poll_count = None;
    let mut killed_at = None;
    for n in 1..=POLLS {
        tokio::time::sleep(Duration::from_secs_f64(POLL)).await;
        if n == KILL_AT + 1 {
            plane.kill(HOST_C);
            killed_at = Some(Instant::now());
            plane
                .disable_scheduler(HOST_A, "watch test: disk swap")
                .await;
        }
        let step = watcher.step().await.expect("poll");
        for change in &step.changes {
            let Some(host) = host_of.get(&change.id()) else {
                continue;
            };
            let entry = seen.entry(host.clone()).or_default();
            match change {
                Change::Heartbeat {
                    report_count,
                    clock_offset,
                    ..
                } => {
                    entry.heartbeats.push((n, *report_count));
                    entry.offsets.extend(*clock_offset);
                }
                Change::Admin { .. } => entry.admin.push(change.clone()),
                other => panic!("unexpected change {other:?}"),
            }
        }
        if n == KILL_AT + 2 {
            kill_poll_count = step.poll.row(id_of[HOST_C]).map(|r| r.report_count);
        }
        last = step.poll;
    }

    // Every scheduler beat before the kill; a and b went on beating.
    for host in [HOST_A, SKEWED_HOST, HOST_C] {
        let before: Vec<_> = seen[host]
            .heartbeats
            .iter()
            .filter(|(n, _)| *n <= KILL_AT)
            .collect();
        assert!(
            !before.is_empty(),
            "{host} sent no heartbeat: {:?}",
            seen[host]
        );
    }
    for host in [HOST_A, SKEWED_HOST] {
        let counts: Vec<i64> = seen[host].heartbeats.iter().map(|(_, c)| *c).collect();
        assert!(counts.windows(2).all(|w| w[0] < w[1]), "{host}: {counts:?}");
        let late = seen[host]
            .heartbeats
            .iter()
            .filter(|(n, _)| *n > KILL_AT + 2)
            .count();
        assert!(late >= 2, "{host} stopped beating: {:?}", seen[host]);
    }
    // The killed one stopped: at most one beat in flight at the kill, nothing after.
    let after_kill: Vec<_> = seen[HOST_C]
        .heartbeats
        .iter()
        .filter(|(n, _)| *n > KILL_AT + 2)
        .collect();
    assert!(
        after_kill.is_empty(),
        "a killed scheduler still beats: {after_kill:?}"
    );
    assert_eq!(
        last.row(id_of[HOST_C]).map(|r| r.report_count),
        kill_poll_count
    );

    // The skewed scheduler's offset, within its bound of +75 s; the true ones' near 0.
    let skew = &seen[SKEWED_HOST].offsets;
    assert!(!skew.is_empty());
    for off in skew {
        assert!(
            off.low_s() - 0.5 <= SKEW_S && SKEW_S <= off.high_s() + 0.5,
            "offset {off:?} does not hold +{SKEW_S} s"
        );
        assert!((off.error_s - (off.gap_s + off.resolution_s)).abs() < 1e-9);
        assert!(off.gap_s > 0.0, "{off:?}");
    }
    for off in &seen[HOST_A].offsets {
        assert!(
            off.low_s() - 0.5 <= 0.0 && 0.0 <= off.high_s() + 0.5,
            "{off:?}"
        );
    }

    // OpenStack's own verdict, computed as cinder-api does, agrees with cinder-api.
    let sdt = watcher.reader().config().openstack_service_down_time();
    let verdict = |host: &str| {
        openstack_state(
            WatchKind::Cinder,
            last.row(id_of[host]).unwrap(),
            last.db_now,
            sdt,
        )
    };
    assert_eq!(verdict(SKEWED_HOST), OpenstackState::Down);
    assert_eq!(verdict(HOST_A), OpenstackState::Up);
    let listed = plane.service_list().await;
    for host in [HOST_A, SKEWED_HOST] {
        let row = listed
            .iter()
            .find(|r| r["Host"] == host && r["Binary"] == "cinder-scheduler")
            .unwrap();
        assert_eq!(row["State"], verdict(host).as_str(), "{host}: {listed:?}");
    }

    // The disable through the real cinder-api: one admin change, with the reason and the
    // time of it, and updated_at not moved by it.
    let admin = &seen[HOST_A].admin;
    assert_eq!(admin.len(), 1, "{admin:?}");
    match &admin[0] {
        Change::Admin {
            before,
            after,
            modified_at,
            ..
        } => {
            assert!(!before.disabled && after.disabled);
            assert_eq!(
                after.disabled_reason.as_deref(),
                Some("watch test: disk swap")
            );
            let modified_at = modified_at.expect("cinder sets modified_at");
            assert!(
                (modified_at - last.db_now).num_seconds().abs() < 15,
                "{modified_at}"
            );
        }
        other => panic!("{other:?}"),
    }
    let listed_a = listed.iter().find(|r| r["Host"] == HOST_A).unwrap();
    assert_eq!(listed_a["Status"], "disabled");
    assert!(seen[SKEWED_HOST].admin.is_empty() && seen[HOST_C].admin.is_empty());
    watcher.reader().close().await;

    vigil_sees(plane, &server, &mut downs, killed_at.expect("killed")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cinder_story_on_mariadb() {
    let Some(plane) = cinder_on_mariadb().await else {
        return;
    };
    cinder_story(&plane).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cinder_story_on_postgres() {
    let Some(plane) = cinder_on_postgres().await else {
        return;
    };
    cinder_story(&plane).await;
}

/// Writes that the watch's pool must refuse, on Cinder's real table.
const WRITES: [&str; 3] = [
    "UPDATE services SET report_count = 0",
    "INSERT INTO services (report_count) VALUES (0)",
    "DELETE FROM services",
];

async fn writes_are_refused(reader: &WatchReader) {
    for sql in WRITES {
        let err = reader
            .probe_statement(sql)
            .await
            .expect_err("a write through the watch's pool must fail");
        let text = err.to_string().to_lowercase();
        assert!(
            matches!(err, WatchError::Query { .. })
                && text.contains("read")
                && text.contains("only"),
            "{sql}: {err}"
        );
    }
    // The pool still reads, and the rows are all there.
    let poll = reader.poll().await.expect("the pool still reads");
    assert!(!poll.rows.is_empty());
    assert!(
        poll.rows.iter().all(|r| r.report_count > 0),
        "{:?}",
        poll.rows
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_the_watch_fail_on_mariadb() {
    let Some(plane) = cinder_on_mariadb().await else {
        return;
    };
    let reader = WatchReader::new(config(WatchKind::Cinder, &plane.url)).unwrap();
    writes_are_refused(&reader).await;
    // DDL too.
    let err = reader
        .probe_statement("CREATE TABLE vigil_probe (x int)")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("READ ONLY"), "{err}");
    reader.close().await;
}

/// The poll never assumes the session's time zone is UTC: a session at +05:00 reads the same
/// database clock and the same stamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_session_time_zone_does_not_matter() {
    let Some(plane) = cinder_on_mariadb().await else {
        return;
    };
    let utc = WatchReader::new(config(WatchKind::Cinder, &plane.url)).unwrap();
    let east = WatchReader::new(config(
        WatchKind::Cinder,
        &format!("{}?timezone=%2B05:00", plane.url),
    ))
    .unwrap();
    let zone: String = {
        let mut c = sqlx::MySqlConnection::connect(&format!("{}?timezone=%2B05:00", plane.url))
            .await
            .unwrap();
        sqlx::query_scalar("SELECT @@session.time_zone")
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    assert_eq!(zone, "+05:00", "the URL's zone reaches the session");
    let (a, b) = (utc.poll().await.unwrap(), east.poll().await.unwrap());
    assert!(
        (b.db_now - a.db_now).num_milliseconds().abs() < 2_000,
        "{} vs {}",
        a.db_now,
        b.db_now
    );
    let created =
        |p: &vigil_server::watch::Poll| p.rows.iter().map(|r| r.created_at).collect::<Vec<_>>();
    assert_eq!(created(&a), created(&b));
    utc.close().await;
    east.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_the_watch_fail_on_postgres() {
    let Some(plane) = cinder_on_postgres().await else {
        return;
    };
    let reader = WatchReader::new(config(WatchKind::Cinder, &plane.url)).unwrap();
    writes_are_refused(&reader).await;
    let err = reader
        .probe_statement("CREATE TABLE vigil_probe (x int)")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    reader.close().await;
}

/// The wrong kind of table, no table, no database: distinct errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_openstack_and_unreachable() {
    let Some(plane) = cinder_on_mariadb().await else {
        return;
    };
    // Cinder's table read as Nova's: no last_seen_up.
    let err = WatchReader::new(config(WatchKind::Nova, &plane.url))
        .unwrap()
        .poll()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            WatchError::NotOpenStack {
                kind: WatchKind::Nova,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("has no nova services table"),
        "{err}"
    );
    // A database without a services table.
    let empty = openstack::mariadb_database("vigil_watch_empty")
        .await
        .unwrap();
    let err = WatchReader::new(config(
        WatchKind::Cinder,
        &format!("mysql://root@127.0.0.1/{empty}"),
    ))
    .unwrap()
    .poll()
    .await
    .unwrap_err();
    assert!(matches!(err, WatchError::NotOpenStack { .. }), "{err}");
    // Nobody listening; a database that does not exist; a password hidden.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = WatchReader::new(config(
        WatchKind::Cinder,
        &format!("mysql://cinder:s3cret@127.0.0.1:{closed}/cinder"),
    ))
    .unwrap()
    .poll()
    .await
    .unwrap_err();
    assert!(matches!(err, WatchError::Unreachable { .. }), "{err}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
    let err = WatchReader::new(config(
        WatchKind::Cinder,
        "mysql://root@127.0.0.1/vigil_no_such_db",
    ))
    .unwrap()
    .poll()
    .await
    .unwrap_err();
    assert!(matches!(err, WatchError::Unreachable { .. }), "{err}");
    let err = WatchReader::new(config(
        WatchKind::Cinder,
        "postgres://postgres@127.0.0.1:5432/vigil_no_such_db",
    ))
    .unwrap()
    .poll()
    .await
    .unwrap_err();
    assert!(matches!(err, WatchError::Unreachable { .. }), "{err}");
    let err = WatchReader::new(config(
        WatchKind::Cinder,
        "sqlite:///nonexistent/vigil/cinder.db",
    ))
    .unwrap()
    .poll()
    .await
    .unwrap_err();
    assert!(matches!(err, WatchError::Unreachable { .. }), "{err}");
}

/// Nova's own `services` table, heartbeated as Nova does it: `service_update` with
/// `report_count + 1` sets `last_seen_up = utcnow()` (`nova/db/main/api.py`), and the
/// `TimestampMixin` sets `updated_at`, both with the clock of the nova-conductor that runs
/// the update. The stamps are written with the database clock plus the writer's offset.
struct NovaDb {
    url: String,
    mysql: bool,
}

impl NovaDb {
    async fn exec(&self, sql: &str) {
        if self.mysql {
            let mut c = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
            let _ = c.close().await;
        } else {
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
            let _ = c.close().await;
        }
    }

    fn now_plus(&self, seconds: i64) -> String {
        if self.mysql {
            format!("UTC_TIMESTAMP() + INTERVAL {seconds} SECOND")
        } else {
            format!("(now() AT TIME ZONE 'UTC') + interval '{seconds} seconds'")
        }
    }

    /// `Service.create()`: a row with `report_count` 0, `deleted` 0.
    async fn create(&self, id: i64, host: &str) {
        let now = self.now_plus(0);
        self.exec(&format!(
            "INSERT INTO services (id, uuid, host, {b}, topic, report_count, disabled, forced_down, \
             version, created_at, updated_at, deleted) VALUES ({id}, '00000000-0000-0000-0000-00000000000{id}', \
             '{host}', 'nova-compute', 'compute', 0, {f}, {f}, 66, {now}, NULL, 0)",
            b = if self.mysql { "`binary`" } else { "\"binary\"" },
            f = if self.mysql { "0" } else { "false" },
        ))
        .await;
    }

    /// One `_report_state` of `nova.servicegroup.drivers.db`, its writer's clock `offset` s off.
    async fn report_state(&self, id: i64, offset: i64) {
        let stamp = self.now_plus(offset);
        self.exec(&format!(
            "UPDATE services SET report_count = report_count + 1, last_seen_up = {stamp}, \
             updated_at = {stamp} WHERE id = {id}"
        ))
        .await;
    }
}

async fn nova_story(db: NovaDb) {
    db.create(1, "compute-1").await;
    db.create(2, "compute-2").await;
    db.create(3, "compute-3").await;
    let reader = WatchReader::new(config(WatchKind::Nova, &db.url)).unwrap();
    let mut watcher = Watcher::new(reader);
    let first = watcher.step().await.unwrap();
    assert_eq!(first.poll.rows.len(), 3);
    assert!(first
        .poll
        .rows
        .iter()
        .all(|r| r.binary == "nova-compute" && r.version == Some(66)));
    assert!(first
        .poll
        .rows
        .iter()
        .all(|r| r.availability_zone.is_none() && r.modified_at.is_none()));
    // Never reported: Nova falls back to created_at, up.
    let sdt = watcher.reader().config().openstack_service_down_time();
    for row in &first.poll.rows {
        assert_eq!(
            openstack_state(WatchKind::Nova, row, first.poll.db_now, sdt),
            OpenstackState::Up
        );
    }

    // compute-2 reports through a conductor whose clock is 30 s ahead.
    db.report_state(1, 0).await;
    db.report_state(2, 30).await;
    db.report_state(2, 30).await;
    let step = watcher.step().await.unwrap();
    let beats: Vec<_> = step
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Heartbeat {
                id,
                beats,
                clock_offset,
                ..
            } => Some((*id, *beats, clock_offset.unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(beats.len(), 2, "{:?}", step.changes);
    assert_eq!((beats[0].0, beats[0].1), (1, 1));
    assert_eq!((beats[1].0, beats[1].1), (2, 2));
    let off = beats[1].2;
    assert!(
        off.low_s() - 0.5 <= 30.0 && 30.0 <= off.high_s() + 0.5,
        "{off:?}"
    );
    let row2 = step.poll.row(2).unwrap();
    assert_eq!(
        openstack_state(WatchKind::Nova, row2, step.poll.db_now, sdt),
        OpenstackState::Down
    );
    assert_eq!(
        openstack_state(
            WatchKind::Nova,
            step.poll.row(1).unwrap(),
            step.poll.db_now,
            sdt
        ),
        OpenstackState::Up
    );

    // forced_down (openstack compute service set --down), then a soft delete (deleted = id).
    let t = if db.mysql { "1" } else { "true" };
    db.exec(&format!(
        "UPDATE services SET forced_down = {t} WHERE id = 1"
    ))
    .await;
    db.exec(&format!(
        "UPDATE services SET deleted = id, deleted_at = {} WHERE id = 3",
        db.now_plus(0)
    ))
    .await;
    let step = watcher.step().await.unwrap();
    assert_eq!(step.changes.len(), 2, "{:?}", step.changes);
    assert!(matches!(&step.changes[0], Change::Admin { id: 1, after, .. } if after.forced_down));
    assert!(matches!(&step.changes[1], Change::Removed { row } if row.id == 3));
    assert_eq!(
        openstack_state(
            WatchKind::Nova,
            step.poll.row(1).unwrap(),
            step.poll.db_now,
            sdt
        ),
        OpenstackState::Down,
        "forced down is down whatever last_seen_up says"
    );
    assert_eq!(step.poll.rows.len(), 2);

    // And the pool refuses to write here too.
    let err = watcher
        .reader()
        .probe_statement(&format!("UPDATE services SET forced_down = {t}"))
        .await
        .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("read"), "{err}");
    watcher.reader().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nova_on_mariadb() {
    let Some(name) = openstack::mariadb_database("vigil_nova").await else {
        return;
    };
    if let Err(why) = openstack::create_table_from_model(
        "nova",
        &format!("mysql+pymysql://root@127.0.0.1/{name}"),
    )
    .await
    {
        openstack::missing::<()>(&why);
        return;
    }
    nova_story(NovaDb {
        url: format!("mysql://root@127.0.0.1/{name}"),
        mysql: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nova_on_postgres() {
    let Some(name) = openstack::postgres_database("vigil_nova").await else {
        return;
    };
    if let Err(why) = openstack::create_table_from_model(
        "nova",
        &format!("postgresql+psycopg2://postgres@127.0.0.1/{name}"),
    )
    .await
    {
        openstack::missing::<()>(&why);
        return;
    }
    nova_story(NovaDb {
        url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
        mysql: false,
    })
    .await;
}

/// Cinder's table on SQLite, made by Cinder's own model; rows written as `report_state`
/// writes them. The watch opens the file read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cinder_on_sqlite() {
    let dir = crate::harness::temp_dir();
    let path = dir.path().join("cinder.sqlite");
    if let Err(why) =
        openstack::create_table_from_model("cinder", &format!("sqlite:///{}", path.display())).await
    {
        openstack::missing::<()>(&why);
        return;
    }
    let url = format!("sqlite://{}", path.display());
    let mut w = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let stamp = "strftime('%Y-%m-%d %H:%M:%f', 'now')";
    sqlx::query(&format!(
        "INSERT INTO services (id, host, \"binary\", topic, report_count, disabled, availability_zone, \
         frozen, deleted, created_at, updated_at) VALUES \
         (1, 'vol-1', 'cinder-volume', 'cinder-volume', 0, 0, 'az1', 0, 0, {stamp}, {stamp}), \
         (2, 'vol-2', 'cinder-volume', 'cinder-volume', 0, 0, 'az1', 0, 1, {stamp}, {stamp})"
    ))
    .execute(&mut w)
    .await
    .unwrap();
    let reader = WatchReader::new(config(WatchKind::Cinder, &url)).unwrap();
    assert_eq!(reader.name(), "cinder/cinder");
    let mut watcher = Watcher::new(reader);
    let first = watcher.step().await.unwrap();
    assert_eq!(first.poll.rows.len(), 1, "the deleted row is not read");
    assert_eq!(first.poll.rows[0].availability_zone.as_deref(), Some("az1"));
    sqlx::query(&format!(
        "UPDATE services SET report_count = report_count + 1, updated_at = {stamp} WHERE id = 1"
    ))
    .execute(&mut w)
    .await
    .unwrap();
    let step = watcher.step().await.unwrap();
    match &step.changes[..] {
        [Change::Heartbeat {
            id: 1,
            report_count: 1,
            clock_offset: Some(off),
            ..
        }] => assert!(
            off.offset_s.abs() < 1.0 && off.resolution_s < 0.01,
            "{off:?}"
        ),
        other => panic!("{other:?}"),
    }
    let err = watcher
        .reader()
        .probe_statement("UPDATE services SET report_count = 0")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("readonly"), "{err}");
    let err = watcher
        .reader()
        .probe_statement("INSERT INTO services (report_count) VALUES (0)")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("readonly"), "{err}");
    watcher.reader().close().await;
    let count: i64 = sqlx::query_scalar("SELECT report_count FROM services WHERE id = 1")
        .fetch_one(&mut w)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

/// What Vigil, watching the plane's database, shows of the story: every scheduler, the skewed
/// one up in Vigil but down in Cinder with the doctor's clock finding, the killed one down
/// within `service_down_time` + a poll with its event on the stream, the disable through
/// cinder-api in the history, and admin changes through Vigil refused.
async fn vigil_sees(
    plane: &Plane,
    server: &TestServer,
    downs: &mut EventStream,
    killed_at: Instant,
) {
    let source = format!("cinder/{}", plane.database);
    let (status, list) = server.get(&format!("/v1/services?source={source}")).await;
    assert_eq!(status, 200, "{list}");
    let services = list["services"].as_array().unwrap().clone();
    let find = |host: &str| {
        services
            .iter()
            .find(|s| s["host"] == host && s["binary"] == "cinder-scheduler")
            .unwrap_or_else(|| panic!("{host} not in {services:?}"))
            .clone()
    };
    for host in [HOST_A, SKEWED_HOST, HOST_C] {
        let service = find(host);
        assert_eq!(service["source"], source.as_str(), "{service}");
        assert!(service["report_count"].as_i64().unwrap() > 0, "{service}");
        assert!(service["id"].as_i64().unwrap() > 1 << 52, "{service}");
    }
    // report_interval from the plane's cinder.conf.
    assert_eq!(find(HOST_A)["report_interval"], REPORT_INTERVAL);
    let skewed = find(SKEWED_HOST);
    assert_eq!(
        skewed["state"], "up",
        "Vigil judges on its own clock: {skewed}"
    );
    assert_eq!(skewed["openstack_state"], "down", "{skewed}");
    assert_eq!(find(HOST_A)["openstack_state"], "up");

    // The killed scheduler: down within service_down_time and a poll of the kill (with a
    // second for the detector's tick and the stream), and the event on the stream.
    let limit = Duration::from_secs_f64(SERVICE_DOWN_TIME + POLL + 1.5);
    let left = limit.saturating_sub(killed_at.elapsed());
    let seen = downs.until("down", left).await;
    let down = seen.last().unwrap();
    assert_eq!(down.data["host"], HOST_C);
    assert!(
        killed_at.elapsed() <= limit + Duration::from_secs(1),
        "down after {:?}",
        killed_at.elapsed()
    );
    let id_c = find(HOST_C)["id"].as_i64().unwrap();
    assert_eq!(down.data["service_id"], id_c);
    assert_eq!(server.service(id_c).await["state"], "down");

    // The disable through the real cinder-api, in Vigil's history with its reason.
    let a = find(HOST_A);
    let id_a = a["id"].as_i64().unwrap();
    server
        .eventually("the disable in Vigil", Duration::from_secs(5), || async {
            server.service(id_a).await["disabled"] == true
        })
        .await;
    let shown = server.service(id_a).await;
    assert_eq!(shown["disabled_reason"], "watch test: disk swap");
    let (_, events) = server.get(&format!("/v1/services/{id_a}/events")).await;
    let disabled = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "disabled")
        .unwrap_or_else(|| panic!("no disabled event: {events}"))
        .clone();
    assert_eq!(disabled["reason"], "watch test: disk swap", "{disabled}");
    assert_eq!(disabled["actor"], format!("watch:{source}"), "{disabled}");

    // Vigil never changes a watched service: 409 naming the OpenStack command.
    let (status, body) = server
        .patch(id_a, serde_json::json!({"disabled": false}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "read_only_source");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("openstack volume service set"),
        "{body}"
    );

    // The doctor on the skewed scheduler: its clock, measured against the database's.
    let id_b = skewed["id"].as_i64().unwrap();
    let (status, diagnosis) = server.get(&format!("/v1/services/{id_b}/diagnosis")).await;
    assert_eq!(status, 200, "{diagnosis}");
    let clock = diagnosis["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "clock")
        .unwrap()
        .clone();
    assert_eq!(clock["severity"], "error", "{clock}");
    let summary = clock["summary"].as_str().unwrap();
    assert!(summary.contains("ahead"), "{summary}");

    // /readyz names the watch, readable.
    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    let watch = &ready["watches"][0];
    assert_eq!(watch["name"], source.as_str(), "{ready}");
    assert_eq!(watch["status"], "ok", "{ready}");
    assert!(watch["services"].as_u64().unwrap() >= 3, "{ready}");
}

/// One server watching two databases at once, Nova's table on MariaDB and Cinder's on
/// SQLite, beside a service registered with Vigil under the same host and binary: every row
/// listed with its source (the Cinder-compatible API too), Nova's beats counted, a service
/// that never reports going down, OpenStack's forced down and soft delete as events, and a
/// database that cannot be read making its services unknown (not down) until it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_watches_nova_and_cinder_at_once() {
    let Some(name) = openstack::mariadb_database("vigil_nova_server").await else {
        return;
    };
    if let Err(why) = openstack::create_table_from_model(
        "nova",
        &format!("mysql+pymysql://root@127.0.0.1/{name}"),
    )
    .await
    {
        openstack::missing::<()>(&why);
        return;
    }
    let dir = temp_dir();
    let cinder_path = dir.path().join("cinder.sqlite");
    if let Err(why) = openstack::create_table_from_model(
        "cinder",
        &format!("sqlite:///{}", cinder_path.display()),
    )
    .await
    {
        openstack::missing::<()>(&why);
        return;
    }
    let cinder_url = format!("sqlite://{}", cinder_path.display());
    let mut w = sqlx::SqliteConnection::connect(&cinder_url).await.unwrap();
    sqlx::query(
        "INSERT INTO services (id, host, \"binary\", topic, report_count, disabled, availability_zone, \
         frozen, deleted, created_at, updated_at) VALUES (1, 'vol-1', 'cinder-volume', 'cinder-volume', \
         0, 0, 'az1', 0, 0, strftime('%Y-%m-%d %H:%M:%f', 'now'), strftime('%Y-%m-%d %H:%M:%f', 'now'))",
    )
    .execute(&mut w)
    .await
    .unwrap();
    let nova = NovaDb {
        url: format!("mysql://root@127.0.0.1/{name}"),
        mysql: true,
    };
    nova.create(1, "compute-1").await;
    nova.create(2, "compute-2").await;

    let watch = |kind, url: &str| WatchConfig {
        poll_interval: 0.3,
        ..config(kind, url)
    };
    let mut server_config = Backend::Sqlite.config(dir.path());
    server_config.service_down_time = 3.0;
    server_config.cinder_api.noauth = true;
    server_config.watch = vec![
        // Not told its report_interval: Vigil infers it from the cadence it sees.
        WatchConfig {
            report_interval: None,
            ..watch(WatchKind::Nova, &nova.url)
        },
        watch(WatchKind::Cinder, &cinder_url),
    ];
    let server = TestServer::start_with_cinder(server_config).await;
    let nova_source = format!("nova/{name}");
    let own = server.register("compute-1", "nova-compute").await;

    let list = |query: String| {
        let server = &server;
        async move {
            let (status, body) = server.get(&format!("/v1/services?{query}")).await;
            assert_eq!(status, 200, "{body}");
            body["services"].as_array().unwrap().clone()
        }
    };
    server
        .eventually(
            "every watched row listed",
            Duration::from_secs(10),
            || async { list(String::new()).await.len() == 4 },
        )
        .await;
    let pair = list("host=compute-1&binary=nova-compute".into()).await;
    let sources: Vec<&str> = pair.iter().map(|s| s["source"].as_str().unwrap()).collect();
    assert_eq!(sources, ["vigil", nova_source.as_str()], "{pair:?}");
    assert_eq!(pair[0]["id"], own);
    let compute_1 = pair[1]["id"].as_i64().unwrap();
    assert_eq!(pair[1]["version"], "66");
    let nova_rows = list(format!("source={nova_source}")).await;
    assert_eq!(nova_rows.len(), 2, "{nova_rows:?}");
    let compute_2 = nova_rows.iter().find(|s| s["host"] == "compute-2").unwrap()["id"]
        .as_i64()
        .unwrap();
    let volume = list("source=cinder/cinder".into()).await;
    assert_eq!(volume.len(), 1);
    assert_eq!(volume[0]["zone"], "az1");
    let (status, os_services) = server
        .http
        .get(format!(
            "{}/v3/os-services",
            server.cinder_url.as_ref().unwrap()
        ))
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    assert_eq!(status, 200);
    let os_services: serde_json::Value = os_services.json().await.unwrap();
    assert!(
        os_services["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["host"] == "vol-1" && s["binary"] == "cinder-volume"),
        "{os_services}"
    );

    // Through the Cinder-compatible API too, a watched service is not Vigil's to change.
    let refused = server
        .http
        .put(format!(
            "{}/v3/os-services/disable",
            server.cinder_url.as_ref().unwrap()
        ))
        .json(&serde_json::json!({"host": "vol-1", "binary": "cinder-volume"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let refused = refused.text().await.unwrap();
    assert!(
        refused.contains("openstack volume service set"),
        "{refused}"
    );

    // compute-1 beats as Nova does; compute-2 never does, and goes down.
    let mut stream = EventStream::connect(&server, "?host=compute-2&kind=down", None).await;
    let beating = async {
        for _ in 0..12 {
            nova.report_state(1, 0).await;
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    };
    let (_, downs) = tokio::join!(beating, stream.until("down", Duration::from_secs(8)));
    assert_eq!(downs.last().unwrap().data["service_id"], compute_2);
    let shown = server.service(compute_1).await;
    assert_eq!(shown["state"], "up", "{shown}");
    assert!(shown["report_count"].as_i64().unwrap() >= 10, "{shown}");
    // Beats every 0.4 s (plus the time an UPDATE takes), seen through polls 0.3 s apart.
    let observed = shown["report_interval"].as_f64().unwrap();
    assert!(
        (0.3..=0.8).contains(&observed),
        "observed cadence {observed}: {shown}"
    );
    assert_eq!(server.service(compute_2).await["state"], "down");

    // Nova's forced down (`openstack compute service set --down`) and soft delete.
    nova.exec("UPDATE services SET forced_down = 1 WHERE id = 1")
        .await;
    nova.exec("UPDATE services SET deleted = id WHERE id = 2")
        .await;
    server
        .eventually(
            "forced down and deleted",
            Duration::from_secs(5),
            || async {
                server.service(compute_1).await["forced_down"] == true
                    && server.get(&format!("/v1/services/{compute_2}")).await.0 == 404
            },
        )
        .await;
    assert_eq!(server.service(compute_1).await["state"], "down");
    // The events, written by the detector at its next tick.
    let has_event = |query: String, kind: &'static str, id: i64, needle: String| {
        let server = &server;
        async move {
            let (_, events) = server.get(&format!("/v1/events?{query}")).await;
            events["events"].as_array().unwrap().iter().any(|e| {
                e["kind"] == kind
                    && e["service_id"] == id
                    && e["actor"] == format!("watch:{needle}").as_str()
            })
        }
    };
    server
        .eventually("the forced_down event", Duration::from_secs(3), || {
            has_event(
                "host=compute-1".into(),
                "forced_down",
                compute_1,
                nova_source.clone(),
            )
        })
        .await;
    server
        .eventually("the deleted event", Duration::from_secs(3), || {
            has_event(
                "kind=deleted".into(),
                "deleted",
                compute_2,
                nova_source.clone(),
            )
        })
        .await;

    // Nova's database unreadable: its services unknown, not down; Cinder's unaffected.
    nova.exec("UPDATE services SET forced_down = 0 WHERE id = 1")
        .await;
    nova.report_state(1, 0).await;
    server
        .eventually("up before the outage", Duration::from_secs(3), || async {
            server.service(compute_1).await["state"] == "up"
        })
        .await;
    let downs_of_1 = || async {
        let (_, events) = server
            .get(&format!("/v1/services/{compute_1}/events?kind=down"))
            .await;
        events["events"].as_array().unwrap().len()
    };
    let downs_before = downs_of_1().await;
    nova.exec("RENAME TABLE services TO services_away").await;
    server
        .eventually(
            "unknown while unreadable",
            Duration::from_secs(2),
            || async { server.service(compute_1).await["state"] == "unknown" },
        )
        .await;
    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    let watches = ready["watches"].as_array().unwrap();
    assert_eq!(watches[0]["status"], "unreachable", "{ready}");
    assert!(watches[0]["reason"]
        .as_str()
        .unwrap()
        .contains(&nova_source));
    assert_eq!(watches[1]["status"], "ok", "{ready}");
    assert_eq!(
        list(format!("source={nova_source}&state=unknown"))
            .await
            .len(),
        1
    );
    // Longer than service_down_time unreadable, and still not declared down.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(server.service(compute_1).await["state"], "unknown");
    let (_, all) = server
        .get(&format!("/v1/services/{compute_1}/events"))
        .await;
    assert_eq!(
        downs_of_1().await,
        downs_before,
        "declared down while unknown: {all}"
    );
    // Readable again, and beating: up.
    nova.exec("RENAME TABLE services_away TO services").await;
    nova.report_state(1, 0).await;
    server
        .eventually("up again", Duration::from_secs(5), || async {
            server.service(compute_1).await["state"] == "up"
        })
        .await;
    let (_, ready) = server.get("/readyz").await;
    assert_eq!(ready["status"], "ok", "{ready}");
}
