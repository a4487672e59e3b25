//! Three `vigil server` processes on one PostgreSQL database; the one that leads detection is
//! killed (SIGKILL, not a polite stop) and another takes over, losing and repeating nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::Connection;

use crate::cli::ServerProcess;

const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A fresh schema, or `None` (skipped) outside CI when PostgreSQL is not running.
async fn schema() -> Option<String> {
    let mut conn = match sqlx::PgConnection::connect(POSTGRES).await {
        Ok(conn) => conn,
        Err(err) => {
            assert!(
                !under_ci(),
                "PostgreSQL at {POSTGRES} is required under CI: {err}"
            );
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipping: PostgreSQL not reachable: {err}"
            );
            return None;
        }
    };
    let name = format!("vigil_failover_{:08x}", rand_suffix());
    sqlx::query(&format!("CREATE SCHEMA {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    Some(name)
}

fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    nanos ^ std::process::id()
}

async fn json(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Option<Value> {
    let mut request = http
        .request(method, url)
        .bearer_auth(crate::AGENT_TOKEN)
        .timeout(Duration::from_secs(5));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.ok()?.json().await.ok()
}

async fn role(http: &reqwest::Client, server: &ServerProcess) -> Option<String> {
    let health = json(
        http,
        reqwest::Method::GET,
        format!("{}/healthz", server.url),
        None,
    )
    .await?;
    health["role"].as_str().map(str::to_owned)
}

async fn events(http: &reqwest::Client, url: &str, kind: &str) -> Vec<Value> {
    json(
        http,
        reqwest::Method::GET,
        format!("{url}/v1/events?kind={kind}&limit=1000"),
        None,
    )
    .await
    .and_then(|body| body["events"].as_array().cloned())
    .unwrap_or_default()
}

async fn wait(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_detector_replica_loses_and_repeats_no_transition() {
    let Some(schema) = schema().await else {
        return;
    };
    let url = format!("{POSTGRES}?options=-c%20search_path%3D{schema}");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut servers: Vec<Option<ServerProcess>> = dirs
        .iter()
        .map(|dir| {
            Some(ServerProcess::start(
                dir.path(),
                &["--database", &url, "--admin-token", "t"],
            ))
        })
        .collect();
    let http = reqwest::Client::new();
    let mut leader = None;
    wait("a leader", Duration::from_secs(15), async || {
        for (i, server) in servers.iter().enumerate() {
            if role(&http, server.as_ref().unwrap()).await.as_deref() == Some("leader") {
                leader = Some(i);
                return true;
            }
        }
        false
    })
    .await;
    let leader = leader.unwrap();
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let follower_url = servers[followers[0]].as_ref().unwrap().url.clone();

    let mut ids = Vec::new();
    for host in ["fo-a", "fo-b"] {
        let body = json(
            &http,
            reqwest::Method::POST,
            format!("{follower_url}/v1/services"),
            Some(json!({"host": host, "binary": "w", "report_interval": 0.1})),
        )
        .await
        .expect("register");
        ids.push(body["id"].as_i64().unwrap());
    }
    let beating: Vec<Arc<AtomicBool>> = ids
        .iter()
        .map(|_| Arc::new(AtomicBool::new(true)))
        .collect();
    let urls: Vec<String> = followers
        .iter()
        .map(|i| servers[*i].as_ref().unwrap().url.clone())
        .collect();
    let beater = {
        let (ids, beating, http) = (ids.clone(), beating.clone(), http.clone());
        tokio::spawn(async move {
            for round in 0.. {
                for (id, on) in ids.iter().zip(&beating) {
                    if on.load(Ordering::Relaxed) {
                        let url =
                            format!("{}/v1/services/{id}/heartbeat", urls[round % urls.len()]);
                        let _ = http
                            .post(url)
                            .bearer_auth(crate::AGENT_TOKEN)
                            .json(&json!({}))
                            .timeout(Duration::from_secs(1))
                            .send()
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;

    beating[0].store(false, Ordering::Relaxed);
    wait("a's down event", Duration::from_secs(15), async || {
        events(&http, &follower_url, "down").await.len() == 1
    })
    .await;

    let mut killed = servers[leader].take().unwrap();
    killed.child.kill().expect("SIGKILL the leader");
    let _ = killed.child.wait();
    beating[1].store(false, Ordering::Relaxed);

    wait("a new leader", Duration::from_secs(15), async || {
        for i in &followers {
            if role(&http, servers[*i].as_ref().unwrap()).await.as_deref() == Some("leader") {
                return true;
            }
        }
        false
    })
    .await;
    wait(
        "b's down event, from the new leader",
        Duration::from_secs(15),
        async || events(&http, &follower_url, "down").await.len() >= 2,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    beater.abort();
    let downs = events(&http, &follower_url, "down").await;
    let mut per_service: Vec<i64> = downs
        .iter()
        .map(|e| e["service_id"].as_i64().unwrap())
        .collect();
    per_service.sort_unstable();
    let mut want = ids.clone();
    want.sort_unstable();
    assert_eq!(
        per_service, want,
        "one down per service, none lost, none twice: {downs:?}"
    );
    drop(servers);
    if let Ok(mut conn) = sqlx::PgConnection::connect(POSTGRES).await {
        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut conn)
            .await;
    }
}
