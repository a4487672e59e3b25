//! Storage faults on the embedded database: a full disk and a file that cannot be written.
//! While the fault lasts every write is refused with 503 `database_unavailable` (never a
//! 2xx that is not on disk, never a 500), `/readyz` says 503, and when it clears the server
//! takes writes again by itself; after a restart every acknowledged write is there.
//!
//! The full disk is a small tmpfs the test mounts; the read-only file is `chattr +i`. Both
//! need root; outside CI a test that cannot set up its fault says so and skips, under CI it
//! fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{eventually, record, temp_dir, under_ci, Backend, TestServer};

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
pub struct SmallDisk {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (skip) when it cannot be mounted outside CI; panics under CI.
    pub fn mount(size: &str) -> Option<SmallDisk> {
        let dir = temp_dir();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status();
        match status {
            Ok(s) if s.success() => Some(SmallDisk { path, _dir: dir }),
            other => {
                let why = format!("cannot mount a tmpfs (needs root): {other:?}");
                assert!(!under_ci(), "{why}");
                skip(&why);
                None
            }
        }
    }

    /// Fills the disk to the last byte with a file of its own.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let byte = [0u8; 1];
        while file.write_all(&byte).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn skip(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipping a storage fault test: {why}");
}

/// What a burst of registrations got: the acknowledged (host) names, and every status.
#[derive(Default)]
struct Outcomes {
    acknowledged: BTreeSet<String>,
    statuses: Vec<StatusCode>,
}

impl Outcomes {
    /// Registers `count` services named `{prefix}-{n}`; 2xx, 503 and nothing else allowed.
    async fn register(&mut self, server: &TestServer, prefix: &str, count: usize) {
        // Long names: each registration needs new pages, so a full disk shows at once.
        let padding = "x".repeat(200);
        for n in 0..count {
            let host = format!("{prefix}-{n}-{padding}");
            let (status, body) = server
                .post(
                    "/v1/services",
                    json!({"host": host, "binary": "cinder-volume", "report_interval": 5}),
                )
                .await;
            assert!(
                status.is_success() || status == StatusCode::SERVICE_UNAVAILABLE,
                "a storage fault answered {status} {body}"
            );
            if status == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
            } else {
                self.acknowledged.insert(host);
            }
            self.statuses.push(status);
        }
    }

    fn refused(&self) -> usize {
        self.statuses
            .iter()
            .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
            .count()
    }
}

async fn listed_hosts(server: &TestServer) -> BTreeSet<String> {
    let (status, body) = server.get("/v1/services").await;
    assert_eq!(status, StatusCode::OK);
    body["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["host"].as_str().unwrap().to_string())
        .collect()
}

/// Hosts in the database file itself, read by a connection of the test's own.
async fn stored_hosts(db: &Path) -> BTreeSet<String> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    let hosts: Vec<String> = sqlx::query_scalar("SELECT host FROM services")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    hosts.into_iter().collect()
}

async fn ready(server: &TestServer) -> StatusCode {
    server.get("/readyz").await.0
}

/// Writes succeed again, by themselves, once the fault is gone; returns how long that took.
async fn writes_come_back(server: &TestServer, outcomes: &mut Outcomes, prefix: &str) -> f64 {
    let start = std::time::Instant::now();
    loop {
        let refused = outcomes.refused();
        outcomes.register(server, prefix, 1).await;
        if outcomes.refused() == refused {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "writes still refused 10 s after the fault cleared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = start.elapsed().as_secs_f64();
    eventually("ready again", Duration::from_secs(5), || async {
        ready(server).await == StatusCode::OK
    })
    .await;
    recovered
}

/// Records what a storage fault cost.
fn record_fault(test: &str, outcomes: &Outcomes, lost: usize, recovered_s: f64) {
    record(json!({
        "test": test,
        "writes": outcomes.statuses.len(),
        "acknowledged": outcomes.acknowledged.len(),
        "refused_503": outcomes.refused(),
        "lost": lost,
        "recovered_s": recovered_s,
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_503_and_loses_nothing() {
    const FAULT: &str = "disk_full";
    let Some(disk) = SmallDisk::mount("16m") else {
        return;
    };
    let mut config = Backend::Sqlite.config(&disk.path);
    config.flush_interval = 0.2;
    let mut server = TestServer::start(config).await;
    let mut outcomes = Outcomes::default();
    outcomes.register(&server, "before", 10).await;
    assert_eq!(outcomes.refused(), 0);

    let filler = disk.fill();
    outcomes.register(&server, "full", 60).await;
    assert!(
        outcomes.refused() > 0,
        "a full disk refused no write: {:?}",
        outcomes.statuses
    );
    eventually(
        "not ready on a full disk",
        Duration::from_secs(5),
        || async { ready(&server).await == StatusCode::SERVICE_UNAVAILABLE },
    )
    .await;
    // A heartbeat is still taken (held in memory) while writes fail.
    let (status, body) = server.get("/v1/services").await;
    assert_eq!(status, StatusCode::OK);
    let id = body["services"][0]["id"].as_i64().unwrap();
    assert_eq!(server.beat(id).await.0, StatusCode::OK);

    std::fs::remove_file(&filler).unwrap();
    let recovered = writes_come_back(&server, &mut outcomes, "after").await;
    assert!(outcomes
        .acknowledged
        .is_subset(&listed_hosts(&server).await));

    server.stop().await;
    let stored = stored_hosts(&disk.path.join("vigil.db")).await;
    let lost: Vec<_> = outcomes.acknowledged.difference(&stored).collect();
    record_fault(FAULT, &outcomes, lost.len(), recovered);
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    server.restart().await;
    assert!(outcomes
        .acknowledged
        .is_subset(&listed_hosts(&server).await));
}

/// `chattr +i` on `paths`; `false` (after a skip notice, or a panic under CI) when it cannot.
fn immutable(paths: &[PathBuf], on: bool) -> bool {
    for path in paths.iter().filter(|p| p.exists()) {
        let flag = if on { "+i" } else { "-i" };
        let status = Command::new("chattr").arg(flag).arg(path).status();
        // A WAL file that SQLite removed meanwhile (a connection closing) needs no flag.
        if !matches!(status, Ok(s) if s.success()) && path.exists() {
            let why = format!("cannot chattr {flag} {}: {status:?}", path.display());
            assert!(!under_ci(), "{why}");
            skip(&why);
            return false;
        }
    }
    true
}

fn database_files(dir: &Path) -> Vec<PathBuf> {
    ["vigil.db", "vigil.db-wal"]
        .iter()
        .map(|name| dir.join(name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_refuses_writes_and_recovers_when_writable() {
    const FAULT: &str = "read_only";
    // On the machine's own file system: tmpfs has no immutable flag.
    let dir = temp_dir();
    let mut config = Backend::Sqlite.config(dir.path());
    config.flush_interval = 0.2;
    let mut server = TestServer::start(config).await;
    let mut outcomes = Outcomes::default();
    outcomes.register(&server, "before", 5).await;
    let files = database_files(dir.path());
    if !immutable(&files, true) {
        return;
    }
    outcomes.register(&server, "read-only", 5).await;
    let refused = outcomes.refused();
    eventually(
        "not ready on a read-only file",
        Duration::from_secs(5),
        || async { ready(&server).await == StatusCode::SERVICE_UNAVAILABLE },
    )
    .await;
    assert!(immutable(&files, false));
    assert_eq!(
        refused, 5,
        "writes to a read-only file: {:?}",
        outcomes.statuses
    );
    let recovered = writes_come_back(&server, &mut outcomes, "writable").await;

    server.stop().await;
    let stored = stored_hosts(&dir.path().join("vigil.db")).await;
    let lost: Vec<_> = outcomes.acknowledged.difference(&stored).collect();
    record_fault(FAULT, &outcomes, lost.len(), recovered);
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    server.restart().await;
    assert!(outcomes
        .acknowledged
        .is_subset(&listed_hosts(&server).await));
}

/// A database that cannot be written at start-up stops the server with a line that says so,
/// rather than a server that answers every write with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_at_start_up_is_a_clear_error() {
    let dir = temp_dir();
    let config = Backend::Sqlite.config(dir.path());
    let mut server = TestServer::start(config.clone()).await;
    server.register("node-1", "cinder-volume").await;
    server.stop().await;
    let files = database_files(dir.path());
    if !immutable(&files, true) {
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let started = vigil_server::serve(listener, config, async {}).await;
    assert!(immutable(&files, false));
    let message = started
        .expect_err("started on a read-only database")
        .to_string();
    assert!(
        message.contains("cannot be written") && message.contains("vigil.db"),
        "{message}"
    );
}

/// A volume too small for the database and its write-ahead log is one clear line at
/// start-up, not a server that fails its 60th registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_free_space_is_a_clear_error_at_start_up() {
    let Some(disk) = SmallDisk::mount("2m") else {
        return;
    };
    let config = Backend::Sqlite.config(&disk.path.join("data"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let started = vigil_server::serve(listener, config, async {}).await;
    let message = started.expect_err("started on a 2 MiB volume").to_string();
    assert!(
        message.contains("MiB") && message.contains("free"),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The data directory, the database and the token are this user's only; a token file left
/// readable by others is tightened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    let data = dir.path().join("data");
    let mut config = Backend::Sqlite.config(&data);
    config.admin_token = None;
    let mut server = TestServer::start(config.clone()).await;
    server.stop().await;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("vigil.db")), 0o600);
    assert_eq!(mode(&data.join("admin.token")), 0o600);
    std::fs::set_permissions(
        data.join("admin.token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let mut server = TestServer::start(config).await;
    assert_eq!(mode(&data.join("admin.token")), 0o600);
    server.stop().await;
}

/// A start that fails (no database) writes no admin token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_leaves_no_token() {
    let dir = temp_dir();
    let mut config = Backend::Sqlite.config(dir.path());
    config.admin_token = None;
    config.database = Some("postgres://postgres@127.0.0.1:1/nothing".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    assert!(vigil_server::serve(listener, config, async {})
        .await
        .is_err());
    assert!(!dir.path().join("admin.token").exists());
}

/// A batch of heartbeats during a storage outage: as single heartbeats, the beats of known
/// services are taken into memory (and written once the file is writable again), and a beat for
/// a service unknown here gets its own `database_unavailable`, not a failed batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_during_an_outage_holds_known_beats_and_refuses_unknown_ids() {
    let dir = temp_dir();
    let mut config = Backend::Sqlite.config(dir.path());
    config.flush_interval = 0.2;
    let mut server = TestServer::start(config).await;
    let a = server.register("node-1", "cinder-volume").await;
    let b = server.register("node-2", "cinder-volume").await;
    let unknown = b + 100;
    let files = database_files(dir.path());
    if !immutable(&files, true) {
        return;
    }
    eventually("the outage is known", Duration::from_secs(5), || async {
        // A registration is a write: refused, and the outage is then known.
        let _ = server
            .post("/v1/services", json!({"host": "probe", "binary": "b"}))
            .await;
        ready(&server).await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let beats = json!({"beats": [{"id": a}, {"id": unknown}, {"id": b}, {"id": a}]});
    let (status, body) = server.post("/v1/heartbeats", beats.clone()).await;
    assert!(immutable(&files, false));
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = &body["results"];
    assert_eq!(results[0], json!({"id": a, "report_count": 1}), "{body}");
    assert_eq!(
        results[1]["error"]["code"], "database_unavailable",
        "{body}"
    );
    assert_eq!(results[2], json!({"id": b, "report_count": 1}), "{body}");
    assert_eq!(results[3], json!({"id": a, "report_count": 2}), "{body}");

    eventually("writable again", Duration::from_secs(10), || async {
        ready(&server).await == StatusCode::OK
    })
    .await;
    let (status, body) = server.post("/v1/heartbeats", beats).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["results"][1]["error"]["code"], "service_not_found",
        "{body}"
    );
    server.restart().await;
    assert_eq!(server.service(a).await["report_count"], 4);
    assert_eq!(server.service(b).await["report_count"], 2);
}
