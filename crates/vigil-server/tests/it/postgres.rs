//! What only PostgreSQL has: large batched flushes, several replicas on one database, and a
//! database server that can be away.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use futures_util::stream::{self, StreamExt};
use reqwest::StatusCode;
use sqlx::Connection;
use vigil_server::store::{
    BeatFlush, EventFilter, EventKind, NewEvent, PostgresStore, Store, StoreError,
};

use crate::harness::{temp_dir, Backend, TestServer};

/// A direct connection to the test's schema, to see what the server wrote.
async fn connect(backend: &Backend) -> sqlx::PgConnection {
    let Backend::Postgres { url, .. } = backend else {
        unreachable!("a PostgreSQL backend")
    };
    sqlx::PgConnection::connect(url).await.expect("connect")
}

fn url(backend: &Backend) -> &str {
    match backend {
        Backend::Postgres { url, .. } => url,
        Backend::Sqlite => unreachable!("a PostgreSQL backend"),
    }
}

/// Inserts `count` services straight into the table; their ids in order.
async fn insert_services(conn: &mut sqlx::PgConnection, count: i64) -> Vec<i64> {
    sqlx::query_scalar(
        r#"INSERT INTO services (host, "binary", zone, report_interval, created_at)
           SELECT 'h' || i, 'b', 'nova', 10, now() FROM generate_series(1, $1) AS i
           RETURNING id"#,
    )
    .bind(count)
    .fetch_all(conn)
    .await
    .unwrap()
}

/// Runs `test` on a fresh schema, then drops it; skipped without PostgreSQL (outside CI).
async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if let Some(backend) = Backend::postgres().await {
        test(backend.clone()).await;
        backend.drop_schema().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_of_heartbeats_is_flushed_in_one_go() {
    with_postgres(|backend| async move {
        const SERVICES: usize = 5_000;
        let dir = temp_dir();
        let mut config = backend.config(dir.path());
        config.flush_interval = 60.0;
        config.service_down_time = 60.0;
        let mut server = TestServer::start(config).await;
        let started = Instant::now();
        let ids: Vec<i64> = stream::iter(0..SERVICES)
            .map(|i| {
                let server = &server;
                async move { server.register(&format!("host-{i}"), "cinder-volume").await }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let registered = started.elapsed();
        for round in 0..2 {
            stream::iter(&ids)
                .for_each_concurrent(16, |&id| {
                    let server = &server;
                    async move {
                        let (status, body) = server.beat(id).await;
                        assert_eq!(status, StatusCode::OK, "round {round}: {body}");
                    }
                })
                .await;
        }
        let flushed = Instant::now();
        server.stop().await;
        eprintln!(
            "registered {SERVICES} services in {registered:?}; final flush and stop took {:?}",
            flushed.elapsed()
        );
        let mut conn = connect(&backend).await;
        let (flushed, with_time): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE report_count = 2), count(updated_at) FROM service_rows",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(flushed, SERVICES as i64, "every service has both beats");
        assert_eq!(
            with_time, SERVICES as i64,
            "every service has an updated_at"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_counts_from_two_replicas_add_up() {
    with_postgres(|backend| async move {
        let dir = temp_dir();
        let mut a = TestServer::start(backend.config(dir.path())).await;
        let mut b = TestServer::start(backend.config(dir.path())).await;
        let id = a.register("node-1", "cinder-volume").await;
        for _ in 0..7 {
            assert_eq!(a.beat(id).await.0, StatusCode::OK);
        }
        for _ in 0..5 {
            let (status, body) = b.beat(id).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "B reads the service through: {body}"
            );
        }
        a.stop().await;
        b.stop().await;
        let c = TestServer::start(backend.config(dir.path())).await;
        let body = c.service(id).await;
        assert_eq!(body["report_count"], 12, "{body}");
        assert_eq!(body["state"], "up");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_keeps_the_later_time_and_chunks_large_batches() {
    with_postgres(|backend| async move {
        const ROWS: i64 = 25_000;
        let store = PostgresStore::connect(url(&backend), 2)
            .await
            .expect("open the store");
        let mut conn = connect(&backend).await;
        let ids = insert_services(&mut conn, ROWS).await;
        sqlx::query("UPDATE heartbeats SET report_count = 1")
            .execute(&mut conn)
            .await
            .unwrap();
        let now = Utc::now();
        let later = now + TimeDelta::seconds(5);
        let mut beats: Vec<BeatFlush> = ids
            .iter()
            .rev()
            .map(|&id| BeatFlush {
                id,
                updated_at: later,
                report_count_delta: 2,
                zone: None,
                health: None,
            })
            .collect();
        let first = ids[0];
        beats.push(BeatFlush {
            id: i64::MAX,
            updated_at: later,
            report_count_delta: 1,
            zone: None,
            health: None,
        });
        beats[0].zone = Some("az-9".into());
        let started = Instant::now();
        store.flush_beats(&beats).await.expect("first flush");
        eprintln!("flushed {} rows in {:?}", beats.len(), started.elapsed());
        let older = BeatFlush {
            id: first,
            updated_at: now,
            report_count_delta: 1,
            zone: None,
            health: None,
        };
        store.flush_beats(&[older]).await.expect("second flush");
        let (count, total, newest, oldest): (i64, i64, chrono::DateTime<Utc>, chrono::DateTime<Utc>) =
            sqlx::query_as(
                "SELECT count(*), sum(report_count)::bigint, max(updated_at), min(updated_at) FROM service_rows",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(count, ROWS, "the unknown id created nothing");
        assert_eq!(total, ROWS * 3 + 1);
        let micros = |t: chrono::DateTime<Utc>| t.timestamp_micros();
        assert_eq!(micros(newest), micros(later));
        assert_eq!(
            micros(oldest),
            micros(later),
            "a NULL updated_at takes the flushed time; an older one never moves it back"
        );
        let zone: String = sqlx::query_scalar("SELECT zone FROM services WHERE id = $1")
            .bind(ids[ids.len() - 1])
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(zone, "az-9");
    })
    .await;
}

/// A database written before the heartbeat fields had their own table keeps every service's
/// count and last heartbeat through migration 0003.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_migration_keeps_the_counts() {
    with_postgres(|backend| async move {
        let mut conn = connect(&backend).await;
        for script in [
            include_str!("../../migrations/postgres/0001_services.sql"),
            include_str!("../../migrations/postgres/0002_row_version.sql"),
        ] {
            sqlx::raw_sql(script).execute(&mut conn).await.unwrap();
        }
        sqlx::query(
            r#"INSERT INTO services (id, host, "binary", zone, report_interval, created_at,
                   report_count, updated_at)
               VALUES (7, 'h', 'b', 'nova', 10, now(), 42, '2026-01-02T03:04:05.123456Z'),
                      (8, 'h', 'c', 'nova', 10, now(), 0, NULL)"#,
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::raw_sql(include_str!("../../migrations/postgres/0003_heartbeats.sql"))
            .execute(&mut conn)
            .await
            .unwrap();
        let rows: Vec<(i64, i64, Option<String>)> = sqlx::query_as(
            "SELECT id, report_count, to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
             FROM service_rows ORDER BY id",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            rows,
            [
                (7, 42, Some("2026-01-02 03:04:05.123456".to_string())),
                (8, 0, None)
            ]
        );
        sqlx::query("DELETE FROM services WHERE id = 7")
            .execute(&mut conn)
            .await
            .unwrap();
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM heartbeats")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(left, 1, "a deleted service takes its heartbeats row along");
    })
    .await;
}

/// Replicas learn each other's heartbeats from `beat_log`, and their own entries' stored
/// counts; a replica whose cursor fell behind the pruned log reads the heartbeats table whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_reach_other_replicas_through_the_log_and_after_pruning() {
    with_postgres(|backend| async move {
        let a = PostgresStore::connect(url(&backend), 2).await.unwrap();
        let b = PostgresStore::connect(url(&backend), 2).await.unwrap();
        let ids = insert_services(&mut connect(&backend).await, 3).await;
        let start = b.beat_cursor().await.unwrap();
        let at = Utc::now();
        let beat = |id: i64, delta: i64| BeatFlush {
            id,
            updated_at: at,
            report_count_delta: delta,
            zone: None,
            health: None,
        };
        a.flush_beats(&[beat(ids[0], 2), beat(ids[1], 1)])
            .await
            .unwrap();
        b.flush_beats(&[beat(ids[0], 5)]).await.unwrap();

        let (seen, cursor, more) = b.beats_since(start).await.unwrap();
        assert!(!more);
        let micros = |t: Option<chrono::DateTime<Utc>>| t.map(|t| t.timestamp_micros());
        let facts = |beats: &[vigil_server::store::BeatState]| -> Vec<(i64, i64, Option<i64>)> {
            beats
                .iter()
                .map(|s| (s.id, s.report_count, micros(s.updated_at)))
                .collect()
        };
        let stamp = micros(Some(at));
        assert_eq!(
            facts(&seen),
            [(ids[0], 2, stamp), (ids[1], 1, stamp), (ids[0], 7, None)],
            "b reads a's entry whole, and its own entry's stored count without times"
        );
        let (nothing, same, _) = b.beats_since(cursor).await.unwrap();
        assert!(nothing.is_empty());
        assert_eq!(same, cursor);

        // Another replica's flush first, then this one's: the count this replica reads back
        // from its own entry is the total of both.
        b.flush_beats(&[beat(ids[1], 4)]).await.unwrap();
        a.flush_beats(&[beat(ids[1], 1)]).await.unwrap();
        let (seen, cursor, _) = a.beats_since(cursor).await.unwrap();
        assert_eq!(
            facts(&seen),
            [(ids[1], 5, stamp), (ids[1], 6, None)],
            "a's own entry carries the total 1 + 4 + 1"
        );

        a.prune_beat_log(Duration::ZERO).await.unwrap();
        let (all, after, more) = b.beats_since(start).await.unwrap();
        assert!(!more);
        let mut all: Vec<(i64, i64)> = all.iter().map(|s| (s.id, s.report_count)).collect();
        all.sort_unstable();
        assert_eq!(
            all,
            [(ids[0], 7), (ids[1], 6), (ids[2], 0)],
            "the whole table"
        );
        assert!(after >= cursor);
        assert_eq!(b.beat_cursor().await.unwrap(), after);
        let (nothing, _, _) = b.beats_since(after).await.unwrap();
        assert!(nothing.is_empty(), "caught up: no second full read");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_flushing_the_same_services_at_once_neither_deadlock_nor_lose_counts() {
    with_postgres(|backend| async move {
        const ROWS: i64 = 2_000;
        const FLUSHES: i64 = 20;
        let a = PostgresStore::connect(url(&backend), 2).await.unwrap();
        let b = PostgresStore::connect(url(&backend), 2).await.unwrap();
        let mut conn = connect(&backend).await;
        let ids = insert_services(&mut conn, ROWS).await;
        let flushes = [a, b].into_iter().enumerate().map(|(n, store)| {
            let mut beats: Vec<BeatFlush> = ids
                .iter()
                .map(|&id| BeatFlush {
                    id,
                    updated_at: Utc::now(),
                    report_count_delta: 1,
                    zone: None,
                    health: None,
                })
                .collect();
            if n == 1 {
                beats.reverse();
            }
            tokio::spawn(async move {
                for _ in 0..FLUSHES {
                    store.flush_beats(&beats).await.expect("flush");
                }
            })
        });
        for flush in flushes.collect::<Vec<_>>() {
            flush.await.unwrap();
        }
        let total: i64 = sqlx::query_scalar("SELECT sum(report_count)::bigint FROM heartbeats")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(total, ROWS * FLUSHES * 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_event_writers_keep_id_order_equal_to_commit_order() {
    with_postgres(|backend| async move {
        let a = PostgresStore::connect(url(&backend), 4).await.unwrap();
        let b = PostgresStore::connect(url(&backend), 4).await.unwrap();
        let event = |i: i64| NewEvent {
            service_id: i,
            host: format!("h{i}"),
            binary: "b".into(),
            kind: EventKind::Suspect,
            at: Utc::now(),
            reason: None,
            last_seen: None,
            threshold_s: Some(8.0),
            actor: None,
            address: None,
        };
        let writers: Vec<_> = [a.clone(), b.clone()]
            .into_iter()
            .enumerate()
            .map(|(w, store)| {
                tokio::spawn(async move {
                    for i in 0..100 {
                        let batch: Vec<NewEvent> =
                            (0..3).map(|j| event(w as i64 * 1000 + i * 3 + j)).collect();
                        let ids = store.append_events(&batch).await.unwrap();
                        assert!(ids.windows(2).all(|p| p[1] > p[0]), "{ids:?}");
                    }
                })
            })
            .collect();
        // A watcher tailing by id must see every event exactly once, in id order: one that
        // skipped an id committed late never sees that event.
        let mut cursor = 0;
        let mut seen = Vec::new();
        loop {
            let done = writers.iter().all(|w| w.is_finished());
            let page = a
                .list_events(&EventFilter {
                    after: Some(cursor),
                    limit: 1000,
                    ..EventFilter::default()
                })
                .await
                .unwrap();
            for event in page {
                seen.push(event.service_id);
                cursor = event.id;
            }
            if done {
                break;
            }
        }
        for writer in writers {
            writer.await.unwrap();
        }
        let mut all = a
            .list_events(&EventFilter {
                limit: 1000,
                ..EventFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 600);
        all.reverse();
        let ordered: Vec<i64> = all.iter().map(|e| e.service_id).collect();
        assert_eq!(seen.len(), 600, "the watcher skipped events");
        assert_eq!(seen, ordered);
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_database_fails_start_up_quickly_and_clearly() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = temp_dir();
    let mut config = Backend::Sqlite.config(dir.path());
    config.database = Some(format!("postgres://vigil:secret@127.0.0.1:{port}/vigil"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    let err = vigil_server::serve(listener, config, std::future::pending())
        .await
        .expect_err("cannot start");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot open database postgres://vigil:***@127.0.0.1:{port}/vigil: "
        )),
        "{text}"
    );
    assert!(!text.contains("secret"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5), "{text}");
}

#[tokio::test]
async fn a_connection_the_database_terminates_is_unavailable_not_an_internal_error() {
    with_postgres(|backend| async move {
        let mut victim = connect(&backend).await;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut victim)
            .await
            .unwrap();
        let mut admin = connect(&backend).await;
        let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert!(terminated);
        let err = sqlx::query("SELECT 1")
            .execute(&mut victim)
            .await
            .expect_err("the connection was terminated");
        let described = err.to_string();
        assert!(
            matches!(StoreError::from(err), StoreError::Unavailable(_)),
            "{described}"
        );
    })
    .await;
}
