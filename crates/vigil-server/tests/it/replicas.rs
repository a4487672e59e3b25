//! Several servers on one PostgreSQL database, and PostgreSQL going away under them.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{eventually, record, temp_dir, under_ci, Backend, TestServer};

/// `n` servers on one fresh schema, each with its own data directory.
async fn replicas(
    backend: &Backend,
    n: usize,
    offsets: &[f64],
) -> (Vec<tempfile::TempDir>, Vec<TestServer>) {
    let mut dirs = Vec::new();
    let mut servers = Vec::new();
    for i in 0..n {
        let dir = temp_dir();
        let mut config = backend.config(dir.path());
        config.clock_offset = offsets.get(i).copied().unwrap_or(0.0);
        servers.push(TestServer::start(config).await);
        dirs.push(dir);
    }
    (dirs, servers)
}

async fn leaders(servers: &[TestServer]) -> Vec<usize> {
    let mut leaders = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        if server.get("/healthz").await.1["role"] == "leader" {
            leaders.push(i);
        }
    }
    leaders
}

async fn state(server: &TestServer, id: i64) -> String {
    server.service(id).await["state"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn down_events(server: &TestServer, id: i64) -> usize {
    let (_, body) = server
        .get(&format!("/v1/events?service={id}&kind=down"))
        .await;
    body["events"].as_array().unwrap().len()
}

/// How many events of `kind` `id` has.
async fn kind_count(server: &TestServer, id: i64, kind: &str) -> usize {
    let (_, body) = server
        .get(&format!("/v1/events?service={id}&kind={kind}"))
        .await;
    body["events"].as_array().unwrap().len()
}

macro_rules! postgres_only {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(backend) = Backend::postgres().await {
                    tests::$name(&backend).await;
                    backend.drop_schema().await;
                }
            }
        )*
    };
}

postgres_only!(
    heartbeats_spread_over_replicas_keep_a_service_up_everywhere,
    changes_through_one_replica_show_through_all_at_once,
    a_replica_with_a_wrong_clock_changes_nothing,
    concurrent_admin_changes_record_each_transition_once,
    a_leader_that_loses_its_lease_hands_over_without_duplicates,
    health_and_a_stop_taken_by_a_follower_show_everywhere_with_one_event,
    after_a_down_beats_through_a_follower_count_towards_up_after_beats,
);

mod tests {
    use super::*;

    /// With `up_after_beats = 3`, a service declared down that beats once through the leader
    /// and then through a follower comes back on the leader too (the follower's beats count
    /// there), with one `up` event.
    pub async fn after_a_down_beats_through_a_follower_count_towards_up_after_beats(
        backend: &Backend,
    ) {
        let mut dirs = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..2 {
            let dir = temp_dir();
            let mut config = backend.config(dir.path());
            config.flapping.up_after_beats = 3;
            servers.push(TestServer::start(config).await);
            dirs.push(dir);
        }
        eventually("one leader", Duration::from_secs(10), || async {
            leaders(&servers).await.len() == 1
        })
        .await;
        let leader = leaders(&servers).await[0];
        let (leader, follower) = (&servers[leader], &servers[1 - leader]);
        let id = leader.register("node-h", "cinder-volume").await;
        eventually("declared down", Duration::from_secs(10), || async {
            down_events(leader, id).await == 1
        })
        .await;
        leader.beat(id).await;
        assert_eq!(state(leader, id).await, "down", "one beat of three");
        for _ in 0..4 {
            follower.beat(id).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        eventually("up on the leader", Duration::from_secs(10), || async {
            state(leader, id).await == "up" && kind_count(leader, id, "up").await == 1
        })
        .await;
    }

    /// A follower takes a beat with a new health and then a stop: every replica shows them,
    /// and the leader writes each event once; no `down` ever; a beat through the follower
    /// brings it back `up`, with one `up` event.
    pub async fn health_and_a_stop_taken_by_a_follower_show_everywhere_with_one_event(
        backend: &Backend,
    ) {
        let (_dirs, servers) = replicas(backend, 2, &[]).await;
        eventually("one leader", Duration::from_secs(10), || async {
            leaders(&servers).await.len() == 1
        })
        .await;
        let follower = &servers[1 - leaders(&servers).await[0]];
        let id = follower.register("node-h", "cinder-volume").await;
        let (status, _) = follower
            .post(
                &format!("/v1/services/{id}/heartbeat"),
                json!({"health": "failing", "message": "no quorum"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        eventually("failing everywhere", Duration::from_secs(10), || async {
            let mut all = true;
            for server in &servers {
                all &= server.service(id).await["health"] == "failing";
            }
            all
        })
        .await;
        eventually("the health event", Duration::from_secs(10), || async {
            kind_count(&servers[0], id, "health").await == 1
        })
        .await;
        let (status, body) = follower
            .post(&format!("/v1/services/{id}/stop"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for server in &servers {
            assert_eq!(state(server, id).await, "stopped");
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for server in &servers {
            assert_eq!(state(server, id).await, "stopped");
        }
        assert_eq!(kind_count(&servers[0], id, "down").await, 0);
        assert_eq!(kind_count(&servers[0], id, "stopped").await, 1);
        assert_eq!(
            kind_count(&servers[0], id, "health").await,
            1,
            "written once, by the leader"
        );
        follower.beat(id).await;
        eventually("up everywhere", Duration::from_secs(10), || async {
            let mut all = true;
            for server in &servers {
                all &= state(server, id).await == "up";
            }
            all
        })
        .await;
        eventually("the up event", Duration::from_secs(10), || async {
            kind_count(&servers[0], id, "up").await == 1
        })
        .await;
    }

    pub async fn heartbeats_spread_over_replicas_keep_a_service_up_everywhere(backend: &Backend) {
        let (_dirs, servers) = replicas(backend, 3, &[]).await;
        eventually("one leader", Duration::from_secs(10), || async {
            leaders(&servers).await.len() == 1
        })
        .await;
        let id = servers[0].register("node-r", "cinder-volume").await;
        for round in 0..15 {
            let (status, body) = servers[round % 3].beat(id).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for server in &servers {
            assert_eq!(state(server, id).await, "up");
        }
        eventually(
            "every replica counts every beat",
            Duration::from_secs(10),
            || async {
                let mut all = true;
                for server in &servers {
                    all &= server.service(id).await["report_count"] == 15;
                }
                all
            },
        )
        .await;
        eventually(
            "down, as seen from every replica",
            Duration::from_secs(10),
            || async {
                let mut all = true;
                for server in &servers {
                    all &= state(server, id).await == "down";
                }
                all
            },
        )
        .await;
        eventually("the down event", Duration::from_secs(10), || async {
            down_events(&servers[1], id).await == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            down_events(&servers[2], id).await,
            1,
            "written once, by the leader only"
        );
        servers[2].beat(id).await;
        eventually("up again", Duration::from_secs(10), || async {
            let (_, body) = servers[0]
                .get(&format!("/v1/events?service={id}&kind=up"))
                .await;
            body["events"].as_array().unwrap().len() == 1
        })
        .await;
    }

    pub async fn changes_through_one_replica_show_through_all_at_once(backend: &Backend) {
        let (_dirs, servers) = replicas(backend, 3, &[]).await;
        let id = servers[0].register("node-a", "cinder-backup").await;
        let (_, list) = servers[1].get("/v1/services?host=node-a").await;
        assert_eq!(
            list["services"][0]["id"], id,
            "a registration shows at once"
        );
        let (status, _) = servers[1]
            .admin(
                Method::PATCH,
                &format!("/v1/services/{id}"),
                Some(json!({"disabled": true, "disabled_reason": "swap"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        for server in &servers {
            let body = server.service(id).await;
            assert_eq!(body["status"], "disabled");
            assert_eq!(body["disabled_reason"], "swap");
            let (_, list) = server.get("/v1/services?status=disabled").await;
            assert_eq!(list["services"].as_array().unwrap().len(), 1);
        }
        let (status, _) = servers[2]
            .admin(
                Method::DELETE,
                &format!("/v1/services/{id}?force=true"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        for server in &servers {
            let (_, list) = server.get("/v1/services").await;
            assert!(
                list["services"].as_array().unwrap().is_empty(),
                "a deletion shows at once"
            );
        }
        let again = servers[2].register("node-a", "cinder-backup").await;
        let other = servers[0].register("node-z", "cinder-backup").await;
        assert!(again > id && other > again);
        for server in &servers {
            let (_, list) = server
                .get("/v1/services?host=node-a&binary=cinder-backup")
                .await;
            assert_eq!(
                list["services"][0]["id"], again,
                "the new service keeps its key after the old one's deletion"
            );
        }
    }

    /// The leader's database session ends under it (as when it is cut off): another replica
    /// takes the lead, and the transition due meanwhile is written once.
    pub async fn a_leader_that_loses_its_lease_hands_over_without_duplicates(backend: &Backend) {
        use sqlx::Connection;
        let Backend::Postgres { schema, .. } = backend else {
            unreachable!("PostgreSQL only")
        };
        let (_dirs, servers) = replicas(backend, 2, &[]).await;
        eventually("one leader", Duration::from_secs(10), || async {
            leaders(&servers).await.len() == 1
        })
        .await;
        let id = servers[0].register("node-l", "cinder-volume").await;
        servers[1].beat(id).await;
        let key = leader_key(schema);
        let mut conn = sqlx::PgConnection::connect(crate::harness::POSTGRES_URL)
            .await
            .unwrap();
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_locks
             WHERE locktype = 'advisory' AND granted AND objsubid = 1
               AND classid::bigint = $1 AND objid::bigint = $2",
        )
        .bind((key as u64 >> 32) as i64)
        .bind((key as u64 & 0xffff_ffff) as i64)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            ended,
            [true],
            "the leader's lease session was found and ended"
        );
        eventually("the down event", Duration::from_secs(15), || async {
            down_events(&servers[0], id).await == 1
        })
        .await;
        eventually("a leader again", Duration::from_secs(10), || async {
            leaders(&servers).await.len() == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(down_events(&servers[1], id).await, 1, "written once");
    }

    /// The detection lease's advisory lock key of a schema (FNV-1a, as the store derives it).
    fn leader_key(schema: &str) -> i64 {
        let text = format!("vigil:leader:{schema}");
        text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        }) as i64
    }

    pub async fn concurrent_admin_changes_record_each_transition_once(backend: &Backend) {
        let (_dirs, servers) = replicas(backend, 2, &[]).await;
        let id = servers[0].register("node-x", "cinder-volume").await;
        let path = format!("/v1/services/{id}");
        let disable = json!({"disabled": true, "disabled_reason": "swap"});
        let (a, b) = tokio::join!(
            servers[0].admin(Method::PATCH, &path, Some(disable.clone())),
            servers[1].admin(Method::PATCH, &path, Some(disable)),
        );
        assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK));
        let (status, _) = servers[1]
            .admin(Method::PATCH, &path, Some(json!({"disabled": false})))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, body) = servers[0].get(&format!("/v1/events?service={id}")).await;
        let kinds: Vec<&str> = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["enabled", "disabled", "registered"]);
    }

    pub async fn a_replica_with_a_wrong_clock_changes_nothing(backend: &Backend) {
        let (_dirs, servers) = replicas(backend, 3, &[0.0, 300.0, -300.0]).await;
        let id = servers[0].register("node-c", "cinder-volume").await;
        for round in 0..20 {
            let server = &servers[1 + round % 2];
            assert_eq!(server.beat(id).await.0, StatusCode::OK);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for server in &servers {
            let body = server.service(id).await;
            assert_eq!(body["state"], "up", "{body}");
            let stamped: DateTime<Utc> =
                DateTime::parse_from_rfc3339(body["updated_at"].as_str().unwrap())
                    .unwrap()
                    .with_timezone(&Utc);
            let off = (stamped - Utc::now()).num_milliseconds().abs();
            assert!(
                off < 2000,
                "updated_at is {off} ms off the real time: {body}"
            );
            assert!(
                body["last_heartbeat_age_s"].as_f64().unwrap() < 2.0,
                "{body}"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(down_events(&servers[0], id).await, 0, "no false down");
    }
}

/// A PostgreSQL cluster of the test's own, on a free port, that the test may stop and start:
/// the shared one must stay up for the rest of the suite.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    /// `None` (test skipped) outside CI when PostgreSQL's programs are not installed.
    fn start() -> Option<PrivatePostgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|mut versions| versions.next())
            .and_then(Result::ok)
            .map(|version| version.path().join("bin"));
        let Some(bin) = bin.filter(|b| b.join("pg_ctl").exists()) else {
            assert!(
                !under_ci(),
                "PostgreSQL's programs (/usr/lib/postgresql/*/bin) are required under CI"
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("vigil-pg-")
            .tempdir()
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if is_root() {
            let chown = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status();
            assert!(
                chown.is_ok_and(|s| s.success()),
                "chown the cluster's directory to postgres"
            );
        }
        let cluster = PrivatePostgres { dir, bin, port };
        let data = cluster.data();
        cluster.pg(&["initdb", "-D", &data, "-A", "trust", "-U", "postgres"]);
        cluster.ctl_start();
        Some(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs one of PostgreSQL's programs, as the `postgres` user when this process is root
    /// (PostgreSQL refuses to run as root).
    fn pg(&self, args: &[&str]) {
        let program = self.bin.join(args[0]);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let out = command
            .args(&args[1..])
            .output()
            .expect("run a PostgreSQL program");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let data = self.data();
        let log = self.dir.path().join("log").display().to_string();
        self.pg(&[
            "pg_ctl", "-D", &data, "-o", &options, "-l", &log, "-w", "start",
        ]);
    }

    fn ctl_stop(&self) {
        let data = self.data();
        self.pg(&["pg_ctl", "-D", &data, "-m", "fast", "-w", "stop"]);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let pg_ctl = self.bin.join("pg_ctl");
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_ctl);
            c
        } else {
            Command::new(pg_ctl)
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_restarted_under_heartbeats_loses_nothing_acknowledged() {
    let Some(postgres) = PrivatePostgres::start() else {
        return;
    };
    let dir = temp_dir();
    let mut config = Backend::Sqlite.config(dir.path());
    config.database = Some(postgres.url());
    config.service_down_time = 30.0;
    let mut server = TestServer::start(config).await;
    let id = server.register("node-o", "cinder-volume").await;
    let mut acknowledged = 0;
    for _ in 0..5 {
        assert_eq!(server.beat(id).await.0, StatusCode::OK);
        acknowledged += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    postgres.ctl_stop();
    for _ in 0..10 {
        let (status, body) = server.beat(id).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "heartbeats are accepted into memory: {body}"
        );
        acknowledged += 1;
    }
    eventually(
        "not ready while the database is away",
        Duration::from_secs(15),
        || async {
            let (status, body) = server.get("/readyz").await;
            status == StatusCode::SERVICE_UNAVAILABLE
                && body["status"] == "unavailable"
                && body["reason"].is_string()
        },
    )
    .await;
    let (status, body) = server
        .admin(
            Method::PATCH,
            &format!("/v1/services/{id}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "database_unavailable");
    let (status, body) = server
        .post("/v1/services", json!({"host": "new", "binary": "b"}))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    postgres.ctl_start();
    eventually(
        "ready again without a restart",
        Duration::from_secs(20),
        || async { server.get("/readyz").await.0 == StatusCode::OK },
    )
    .await;
    for _ in 0..3 {
        assert_eq!(server.beat(id).await.0, StatusCode::OK);
        acknowledged += 1;
    }
    let (status, body) = server
        .admin(
            Method::PATCH,
            &format!("/v1/services/{id}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.restart().await;
    let body: Value = server.service(id).await;
    assert_eq!(
        body["report_count"], acknowledged,
        "every acknowledged heartbeat was written"
    );
    assert_eq!(body["status"], "disabled");
}

impl PrivatePostgres {
    /// Stops (SIGSTOP) or continues (SIGCONT) every process of the cluster: a database that
    /// hangs rather than refuses.
    fn signal_all(&self, signal: &str) {
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .expect("postmaster.pid")
            .lines()
            .next()
            .unwrap()
            .trim()
            .to_string();
        let _ = Command::new("pkill")
            .args([&format!("-{signal}"), "-P", &pid])
            .status();
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status();
    }
}

/// Heartbeats `ids` every `every` until the returned sender fires; counts what was
/// acknowledged per service and panics at any answer but 200.
fn beat_forever(
    server: &TestServer,
    ids: Vec<i64>,
    every: Duration,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::collections::HashMap<i64, i64>>,
) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let http = reqwest::Client::new();
    let url = server.url.clone();
    let task = tokio::spawn(async move {
        let mut acknowledged = std::collections::HashMap::new();
        let mut ticker = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = &mut stopped => return acknowledged,
            }
            for id in &ids {
                let response = http
                    .post(format!("{url}/v1/services/{id}/heartbeat"))
                    .json(&json!({}))
                    .send()
                    .await
                    .expect("heartbeat reaches the server");
                assert_eq!(response.status(), StatusCode::OK, "heartbeat refused");
                *acknowledged.entry(*id).or_insert(0) += 1;
            }
        }
    });
    (stop, task)
}

/// A database that refuses (stopped) and then one that hangs (SIGSTOP) under a steady
/// heartbeat load: every heartbeat is taken, no service is suspected or declared down, the
/// clock does not jump, and every acknowledged heartbeat is written once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_raises_no_false_suspect_or_down() {
    let Some(postgres) = PrivatePostgres::start() else {
        return;
    };
    let dir = temp_dir();
    let mut config = Backend::Sqlite.config(dir.path());
    config.database = Some(postgres.url());
    config.service_down_time = 2.0;
    config.flush_interval = 0.2;
    let mut server = TestServer::start(config).await;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(server.register(&format!("node-{n}"), "cinder-volume").await);
    }
    let (stop, beats) = beat_forever(&server, ids.clone(), Duration::from_millis(200));
    let clock_before = chrono::Utc::now();
    tokio::time::sleep(Duration::from_secs(2)).await;

    postgres.ctl_stop();
    let started = std::time::Instant::now();
    eventually(
        "not ready while stopped",
        Duration::from_secs(5),
        || async { server.get("/readyz").await.0 == StatusCode::SERVICE_UNAVAILABLE },
    )
    .await;
    // Reads and readiness answer from memory at once while the database is known down.
    let asked = std::time::Instant::now();
    assert_eq!(server.get("/v1/services").await.0, StatusCode::OK);
    assert_eq!(
        server.get("/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "{:?}",
        asked.elapsed()
    );
    let (status, _) = server
        .post("/v1/services", json!({"host": "new", "binary": "b"}))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let outage = Duration::from_secs_f64(outage_s());
    tokio::time::sleep(outage.saturating_sub(started.elapsed())).await;
    postgres.ctl_start();
    eventually(
        "ready after the restart",
        Duration::from_secs(20),
        || async { server.get("/readyz").await.0 == StatusCode::OK },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    postgres.signal_all("STOP");
    tokio::time::sleep(outage.mul_f64(0.8)).await;
    postgres.signal_all("CONT");
    eventually("ready after the pause", Duration::from_secs(20), || async {
        server.get("/readyz").await.0 == StatusCode::OK
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let _ = stop.send(());
    let acknowledged = beats.await.unwrap();
    let (_, services) = server.get("/v1/services").await;
    for service in services["services"].as_array().unwrap() {
        assert_eq!(service["state"], "up", "{service}");
        let at =
            chrono::DateTime::parse_from_rfc3339(service["updated_at"].as_str().unwrap()).unwrap();
        let skew = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds();
        assert!(skew.abs() < 500, "the clock moved by {skew} ms: {service}");
    }
    for kind in ["suspect", "down"] {
        let (_, events) = server.get(&format!("/v1/events?kind={kind}")).await;
        assert_eq!(events["events"], json!([]), "false {kind}: {events}");
    }
    assert!(chrono::Utc::now() > clock_before);
    server.restart().await;
    let mut lost = 0;
    for id in &ids {
        let body = server.service(*id).await;
        lost += acknowledged[id] - body["report_count"].as_i64().unwrap();
    }
    record(json!({
        "test": "postgres_outage",
        "stopped_s": outage.as_secs_f64(),
        "paused_s": outage.mul_f64(0.8).as_secs_f64(),
        "services": ids.len(),
        "acknowledged_beats": acknowledged.values().sum::<i64>(),
        "lost_beats": lost,
        "false_suspects": 0,
        "false_downs": 0,
    }));
    assert_eq!(lost, 0, "every acknowledged heartbeat was written");
}

/// How long the outage test stops PostgreSQL (`VIGIL_PG_OUTAGE_S`; the long campaign's 30 s).
fn outage_s() -> f64 {
    std::env::var("VIGIL_PG_OUTAGE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0)
}
