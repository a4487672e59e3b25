//! Tokens and roles, on every backend: the default closed registration, agent tokens bound
//! to hosts, readers, revocation and expiry, and the actors the history records.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use vigil_reporter::Reporter;

use crate::harness::{eventually, temp_dir, Backend, TestServer, AGENT_TOKEN, TOKEN};

crate::each_backend!(
    registration_needs_an_agent_token_by_default,
    an_agent_token_writes_only_its_hosts,
    readers_read_and_nothing_else,
    revoked_and_expired_tokens_are_refused,
    the_history_records_who_asked,
    the_cinder_api_takes_the_same_tokens,
    writers_are_rate_limited_and_the_fleet_capped,
);

/// The configuration of a server as it starts by default: registration closed.
fn closed(backend: &Backend, dir: &std::path::Path) -> vigil_server::Config {
    let mut config = backend.config(dir);
    config.auth = vigil_server::AuthConfig::default();
    config
}

async fn create(server: &TestServer, body: Value) -> String {
    let (status, answer) = server
        .admin(Method::POST, "/v1/tokens", Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}: {answer}");
    assert!(answer.get("hash").is_none(), "{answer}");
    answer["secret"].as_str().unwrap().to_string()
}

async fn register_as(server: &TestServer, token: Option<&str>, host: &str) -> (StatusCode, Value) {
    server
        .request(
            Method::POST,
            "/v1/services",
            Some(json!({"host": host, "binary": "cinder-volume", "report_interval": 0.2})),
            token,
        )
        .await
}

async fn beat_as(server: &TestServer, token: Option<&str>, id: i64) -> (StatusCode, Value) {
    server
        .request(
            Method::POST,
            &format!("/v1/services/{id}/heartbeat"),
            Some(json!({})),
            token,
        )
        .await
}

async fn registration_needs_an_agent_token_by_default(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(closed(&backend, dir.path())).await;
    let (status, body) = register_as(&server, None, "node-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("agent.token"),
        "{body}"
    );
    let (status, _) = register_as(&server, Some("not-a-token"), "node-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The server's own agent token (any host), and the reporter crate with it.
    let (status, body) = register_as(&server, Some(AGENT_TOKEN), "node-1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_i64().unwrap();
    assert_eq!(beat_as(&server, None, id).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        beat_as(&server, Some(AGENT_TOKEN), id).await.0,
        StatusCode::OK
    );
    let handle = Reporter::builder(&server.url, "node-2", "cinder-volume")
        .report_interval(Duration::from_millis(200))
        .token(AGENT_TOKEN)
        .start()
        .expect("reporter starts");
    eventually("the reporter beats", Duration::from_secs(10), || async {
        handle.report_count() >= 2
    })
    .await;
    handle.shutdown().await;
    // Reads stay open by default.
    assert_eq!(server.get("/v1/services").await.0, StatusCode::OK);
}

async fn an_agent_token_writes_only_its_hosts(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(closed(&backend, dir.path())).await;
    let stor = create(
        &server,
        json!({"name": "stor-fleet", "role": "agent", "hosts": ["stor-*"]}),
    )
    .await;
    let (status, body) = register_as(&server, Some(&stor), "stor-1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let stor_id = body["id"].as_i64().unwrap();
    let (status, body) = register_as(&server, Some(&stor), "comp-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "host_not_allowed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("stor-*") && message.contains("comp-1"),
        "{message}"
    );
    // Another host's service, registered by its own agent, cannot be kept alive (or
    // rewritten) with this token.
    let (_, body) = register_as(&server, Some(AGENT_TOKEN), "comp-1").await;
    let comp_id = body["id"].as_i64().unwrap();
    let (status, body) = beat_as(&server, Some(&stor), comp_id).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "host_not_allowed");
    let before = server.service(comp_id).await["report_count"].clone();
    assert_eq!(
        beat_as(&server, Some(&stor), stor_id).await.0,
        StatusCode::OK
    );
    // A batch answers per beat: its own host's beat counts, the other's is refused alone.
    let (status, body) = server
        .request(
            Method::POST,
            "/v1/heartbeats",
            Some(json!({"beats": [{"id": stor_id}, {"id": comp_id}]})),
            Some(&stor),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["results"][0]["report_count"].is_i64(), "{body}");
    assert_eq!(body["results"][1]["error"]["code"], "host_not_allowed");
    assert_eq!(server.service(comp_id).await["report_count"], before);
    // An agent may not read (reads are open by default, so only a closed server shows it)
    // nor administer.
    let (status, body) = server
        .request(
            Method::PATCH,
            &format!("/v1/services/{stor_id}"),
            Some(json!({"disabled": true})),
            Some(&stor),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = server
        .request(Method::GET, "/v1/tokens", None, Some(&stor))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn readers_read_and_nothing_else(backend: Backend) {
    let dir = temp_dir();
    let mut config = closed(&backend, dir.path());
    config.auth.anonymous_read = false;
    let server = TestServer::start(config).await;
    let reader = create(&server, json!({"name": "dash", "role": "reader"})).await;
    let (status, body) = server.get("/v1/services").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = server
        .request(Method::GET, "/v1/services", None, Some(AGENT_TOKEN))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for path in ["/v1/services", "/v1/events"] {
        let (status, _) = server.request(Method::GET, path, None, Some(&reader)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let metrics = |token: Option<&str>| {
        let mut request = server.http.get(format!("{}/metrics", server.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(metrics(Some(&reader)).await, StatusCode::OK);
    assert_eq!(metrics(None).await, StatusCode::UNAUTHORIZED);
    let (status, body) = register_as(&server, Some(&reader), "node-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = server
        .request(Method::GET, "/v1/tokens", None, Some(&reader))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The probes stay open.
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK);
    // Bad token requests are refused with our error body.
    for body in [
        json!({"name": "x y", "role": "reader"}),
        json!({"name": "r", "role": "reader", "hosts": ["a"]}),
        json!({"name": "admin", "role": "admin"}),
        json!({"name": "g", "role": "agent", "hosts": ["["]}),
        json!({"name": "everywhere", "role": "agent"}),
        json!({"name": "e", "role": "reader", "expires_in_s": -1}),
    ] {
        let (status, answer) = server
            .admin(Method::POST, "/v1/tokens", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer["error"]["code"]
            .as_str()
            .unwrap()
            .starts_with("invalid_"));
    }
    let (status, answer) = server
        .admin(
            Method::POST,
            "/v1/tokens",
            Some(json!({"name": "dash", "role": "reader"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "token_exists");
}

async fn revoked_and_expired_tokens_are_refused(backend: Backend) {
    let dir = temp_dir();
    let config = closed(&backend, dir.path());
    let server = TestServer::start(config.clone()).await;
    let agent = create(
        &server,
        json!({"name": "a1", "role": "agent", "hosts": ["*"]}),
    )
    .await;
    let brief = create(
        &server,
        json!({"name": "brief", "role": "agent", "hosts": ["*"], "expires_in_s": 0.3}),
    )
    .await;
    assert_eq!(
        register_as(&server, Some(&agent), "n").await.0,
        StatusCode::CREATED
    );
    // A second replica on a shared database accepts the token too, and learns of its
    // revocation within flush_interval.
    let replica = match &backend {
        Backend::Postgres { .. } => {
            let dir2 = temp_dir();
            let mut config2 = closed(&backend, dir2.path());
            config2.database = config.database.clone();
            let replica = TestServer::start(config2).await;
            assert_eq!(
                register_as(&replica, Some(&agent), "m").await.0,
                StatusCode::CREATED
            );
            Some((replica, dir2))
        }
        Backend::Sqlite => None,
    };
    let (status, _) = server.admin(Method::DELETE, "/v1/tokens/a1", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = register_as(&server, Some(&agent), "n").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    if let Some((replica, _dir)) = &replica {
        eventually(
            "the replica refuses the revoked token",
            Duration::from_secs(5),
            || async {
                register_as(replica, Some(&agent), "m").await.0 == StatusCode::UNAUTHORIZED
            },
        )
        .await;
    }
    let (status, body) = server.admin(Method::DELETE, "/v1/tokens/a1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "token_not_found");
    eventually(
        "the brief token expires",
        Duration::from_secs(5),
        || async {
            let (status, body) = register_as(&server, Some(&brief), "n").await;
            status == StatusCode::UNAUTHORIZED
                && body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("expired")
        },
    )
    .await;
    let (_, list) = server.admin(Method::GET, "/v1/tokens", None).await;
    let tokens = list["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1, "{list}");
    assert_eq!(tokens[0]["name"], "brief");
    assert_eq!(tokens[0]["expired"], true);
    assert_eq!(tokens[0]["created_by"], "admin");
    assert!(tokens[0].get("secret").is_none() && tokens[0].get("hash").is_none());
    // The database keeps the SHA-256 of a secret, never the secret; tokens survive a restart.
    let kept = create(&server, json!({"name": "kept", "role": "reader"})).await;
    let mut server = server;
    server.restart().await;
    let (_, list) = server.admin(Method::GET, "/v1/tokens", None).await;
    assert!(list.to_string().contains("\"kept\""), "{list}");
    assert!(!list.to_string().contains(&kept));
    if let Backend::Sqlite = backend {
        let db = std::fs::read(dir.path().join("vigil.db")).unwrap();
        let text = String::from_utf8_lossy(&db);
        assert!(!text.contains(&kept), "the secret is in the database file");
    }
}

async fn the_history_records_who_asked(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(closed(&backend, dir.path())).await;
    let ops = create(&server, json!({"name": "ops-alice", "role": "admin"})).await;
    let (_, body) = register_as(&server, Some(AGENT_TOKEN), "node-1").await;
    let id = body["id"].as_i64().unwrap();
    let (status, _) = server
        .request(
            Method::PATCH,
            &format!("/v1/services/{id}"),
            Some(json!({"disabled": true, "disabled_reason": "disk swap"})),
            Some(&ops),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, events) = server.get(&format!("/v1/services/{id}/events")).await;
    let events = events["events"].as_array().unwrap();
    let of = |kind: &str| events.iter().find(|e| e["kind"] == kind).unwrap().clone();
    assert_eq!(of("registered")["actor"], "agent");
    assert_eq!(of("registered")["address"], "127.0.0.1");
    assert_eq!(of("disabled")["actor"], "ops-alice");
    assert_eq!(of("disabled")["address"], "127.0.0.1");
}

async fn the_cinder_api_takes_the_same_tokens(backend: Backend) {
    let dir = temp_dir();
    let mut config = closed(&backend, dir.path());
    config.auth.anonymous_read = false;
    let server = TestServer::start_with_cinder(config).await;
    let reader = create(&server, json!({"name": "horizon", "role": "reader"})).await;
    register_as(&server, Some(AGENT_TOKEN), "node-1").await;
    let cinder = server.cinder_url.clone().unwrap();
    let call = |method: Method, path: &str, token: Option<&str>, body: Option<Value>| {
        let mut request = server.http.request(method, format!("{cinder}{path}"));
        if let Some(token) = token {
            request = request.header("X-Auth-Token", token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(
        call(Method::GET, "/v3/os-services", None, None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(Method::GET, "/v3/os-services", Some(&reader), None).await,
        StatusCode::OK
    );
    // cinderclient's noauth form: `<user>:<project>`, the token as the project.
    assert_eq!(
        call(
            Method::GET,
            "/v3/os-services",
            Some(&format!("u:{reader}")),
            None
        )
        .await,
        StatusCode::OK
    );
    let disable = json!({"host": "node-1", "binary": "cinder-volume"});
    assert_eq!(
        call(
            Method::PUT,
            "/v3/os-services/disable",
            Some(&reader),
            Some(disable.clone())
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(
            Method::PUT,
            "/v3/os-services/disable",
            Some(TOKEN),
            Some(disable)
        )
        .await,
        StatusCode::OK
    );
}

async fn writers_are_rate_limited_and_the_fleet_capped(backend: Backend) {
    let dir = temp_dir();
    let mut config = closed(&backend, dir.path());
    config.limits = vigil_server::LimitsConfig {
        writes_per_second: 0.5,
        write_burst: 3,
        max_services: 4,
    };
    let server = TestServer::start(config).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, body) = register_as(&server, Some(AGENT_TOKEN), &format!("n{n}")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["id"].as_i64().unwrap());
    }
    let response = server
        .http
        .post(format!("{}/v1/services", server.url))
        .bearer_auth(AGENT_TOKEN)
        .json(&json!({"host": "n3", "binary": "cinder-volume"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Heartbeats are never limited; another caller is not slowed by this one.
    for _ in 0..30 {
        assert_eq!(
            beat_as(&server, Some(AGENT_TOKEN), ids[0]).await.0,
            StatusCode::OK
        );
    }
    let (status, body) = register_as(&server, Some(TOKEN), "n3").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Four services: a fifth is refused, an existing one registers again.
    eventually(
        "the agent's bucket refills",
        Duration::from_secs(5),
        || async {
            let (status, body) = register_as(&server, Some(AGENT_TOKEN), "n4").await;
            if status == StatusCode::CONFLICT {
                assert_eq!(body["error"]["code"], "too_many_services");
                true
            } else {
                assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
                false
            }
        },
    )
    .await;
    let (status, _) = register_as(&server, Some(TOKEN), "n0").await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = server.get("/v1/services").await;
    assert_eq!(list["services"].as_array().unwrap().len(), 4);
}

/// An event stream opened with a token ends once the token is revoked: revocation reaches
/// the streams already open, not only new requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_ends_its_open_event_stream() {
    use futures_util::StreamExt;
    let dir = temp_dir();
    let mut config = closed(&Backend::Sqlite, dir.path());
    config.auth.anonymous_read = false;
    let server = TestServer::start(config).await;
    let reader = create(&server, json!({"name": "watcher", "role": "reader"})).await;
    let response = server
        .http
        .get(format!("{}/v1/events/stream", server.url))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    register_as(&server, Some(AGENT_TOKEN), "streamed").await;
    let first = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("an event");
    assert!(first.is_some_and(|chunk| chunk.is_ok()));
    let (status, _) = server
        .admin(Method::DELETE, "/v1/tokens/watcher", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream still runs after its token was revoked"
    );
}
