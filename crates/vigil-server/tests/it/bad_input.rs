//! Every user mistake gets a 4xx with a stable code and loses nothing.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{temp_dir, Backend, TestServer};

async fn server() -> (tempfile::TempDir, TestServer) {
    let dir = temp_dir();
    let server = TestServer::start(Backend::Sqlite.config(dir.path())).await;
    (dir, server)
}

fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        !body["error"]["message"].as_str().unwrap_or("").is_empty(),
        "a human message: {body}"
    );
}

#[tokio::test]
async fn registration_fields_are_checked() {
    let (_dir, server) = server().await;
    let long = "x".repeat(256);
    let cases = [
        (json!({"binary": "b"}), "invalid_host"),
        (json!({"host": "", "binary": "b"}), "invalid_host"),
        (json!({"host": long, "binary": "b"}), "invalid_host"),
        (json!({"host": "a\u{7}b", "binary": "b"}), "invalid_host"),
        (json!({"host": "h"}), "invalid_binary"),
        (json!({"host": "h", "binary": ""}), "invalid_binary"),
        (json!({"host": "h", "binary": long}), "invalid_binary"),
        (json!({"host": "h", "binary": "b\n"}), "invalid_binary"),
        (
            json!({"host": "h", "binary": "b", "topic": long}),
            "invalid_topic",
        ),
        (
            json!({"host": "h", "binary": "b", "zone": long}),
            "invalid_zone",
        ),
        (
            json!({"host": "h", "binary": "b", "version": long}),
            "invalid_version",
        ),
        (
            json!({"host": "h", "binary": "b", "report_interval": 0.05}),
            "invalid_report_interval",
        ),
        (
            json!({"host": "h", "binary": "b", "report_interval": 3601}),
            "invalid_report_interval",
        ),
        (
            json!({"host": "h", "binary": "b", "report_interval": -1}),
            "invalid_report_interval",
        ),
        (json!({"host": 7, "binary": "b"}), "invalid_json"),
    ];
    for (body, code) in cases {
        let (status, answer) = server.post("/v1/services", body.clone()).await;
        assert_error(status, &answer, StatusCode::BAD_REQUEST, code);
    }
    let (_, list) = server.get("/v1/services").await;
    assert_eq!(
        list["services"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );
    let ok = "y".repeat(255);
    let (status, _) = server
        .post("/v1/services", json!({"host": ok, "binary": "b"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "255 characters are allowed");
}

#[tokio::test]
async fn malformed_bodies_get_our_error_body() {
    let (_dir, server) = server().await;
    let url = format!("{}/v1/services", server.url);
    let send = |body: Vec<u8>, content_type: Option<&'static str>| {
        let mut request = server.http.post(&url).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = send(b"{\"host\": \"h\",".to_vec(), Some("application/json")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_json");
    let (status, body) = send(b"[]".to_vec(), Some("application/json")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_json");
    let (status, body) = send(
        b"{\"host\":\"h\",\"binary\":\"b\"}".to_vec(),
        Some("text/plain"),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let (status, body) = send(b"{\"host\":\"h\",\"binary\":\"b\"}".to_vec(), None).await;
    assert_error(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let big = format!(
        "{{\"host\":\"{}\",\"binary\":\"b\"}}",
        "h".repeat(70 * 1024)
    );
    let (status, body) = send(big.into_bytes(), Some("application/json")).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let (status, _) = send(
        b"{\"host\":\"h\",\"binary\":\"b\"}".to_vec(),
        Some("application/json; charset=utf-8"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

/// `POST /v1/heartbeats`: a body that is not a batch is refused whole with our error body;
/// a bad beat inside a well-formed batch only gets its own error (see `batch.rs`).
#[tokio::test]
async fn malformed_batches_are_refused_whole() {
    let (_dir, server) = server().await;
    let id = server.register("node-1", "cinder-volume").await;
    let url = format!("{}/v1/heartbeats", server.url);
    let send = |body: Vec<u8>, content_type: Option<&'static str>| {
        let mut request = server.http.post(&url).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let json_cases: [&[u8]; 15] = [
        b"",
        b"{}",
        b"[]",
        b"{\"beats\":",
        b"{\"beats\":{}}",
        b"{\"beats\":null}",
        b"{\"beats\":[1]}",
        b"{\"beats\":[{}]}",
        b"{\"beats\":[{\"id\":null}]}",
        b"{\"beats\":[{\"id\":\"1\"}]}",
        b"{\"beats\":[{\"id\":1.5}]}",
        b"{\"beats\":[{\"id\":99999999999999999999}]}",
        b"{\"beats\":[{\"id\":1,\"zone\":7}]}",
        // A beat is an object, never its fields in a row.
        b"{\"beats\":[[1]]}",
        b"{\"beats\":[[1,\"z\"]]}",
    ];
    for body in json_cases {
        let (status, answer) = send(body.to_vec(), Some("application/json")).await;
        assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_json");
    }
    let (status, answer) = send(
        b"{\"beats\":[{\"id\":1,\"sent_at\":\"yesterday\"}]}".to_vec(),
        Some("application/json"),
    )
    .await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_json");
    let (status, answer) = send(b"{\"beats\":[]}".to_vec(), Some("text/plain")).await;
    assert_error(
        status,
        &answer,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let huge = format!(
        "{{\"beats\":[{{\"id\":1,\"last_error\":\"{}\"}}]}}",
        "e".repeat(vigil_proto::MAX_BATCH_BODY)
    );
    let (status, answer) = send(huge.into_bytes(), Some("application/json")).await;
    assert_error(
        status,
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let (status, answer) = server
        .request(Method::GET, "/v1/heartbeats", None, None)
        .await;
    assert_error(
        status,
        &answer,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert_eq!(
        server.service(id).await["report_count"],
        0,
        "no refused batch counted"
    );
}

#[tokio::test]
async fn unknown_ids_and_routes() {
    let (_dir, server) = server().await;
    let (status, body) = server.get("/v1/services/999").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "service_not_found");
    let (status, body) = server.beat(999).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "service_not_found");
    let (status, body) = server
        .admin(
            Method::PATCH,
            "/v1/services/999",
            Some(json!({"disabled": true})),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "service_not_found");
    let (status, body) = server.admin(Method::DELETE, "/v1/services/999", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "service_not_found");
    let (status, body) = server.get("/v1/services/nine").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_id");
    let (status, body) = server.get("/v1/nothing").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = server
        .request(Method::PUT, "/v1/services", None, None)
        .await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let (status, body) = server.get("/v1/services?state=sideways").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_state");
    let (status, body) = server.get("/v1/services?status=maybe").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_status");
}

#[tokio::test]
async fn admin_changes_are_checked() {
    let (_dir, server) = server().await;
    let id = server.register("h", "b").await;
    let path = format!("/v1/services/{id}");
    let (status, body) = server
        .request(Method::PATCH, &path, Some(json!({"disabled": true})), None)
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = server
        .request(
            Method::PATCH,
            &path,
            Some(json!({"disabled": true})),
            Some("nope"),
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let long = "r".repeat(256);
    let (status, body) = server
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"disabled": true, "disabled_reason": long})),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_disabled_reason",
    );
    let (status, body) = server
        .admin(Method::PATCH, &path, Some(json!({"disabeld": true})))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_json");
    let (status, body) = server.admin(Method::PATCH, &path, Some(json!({}))).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "empty_change");
    assert_eq!(
        server.service(id).await["status"],
        "enabled",
        "nothing changed"
    );
    let (status, body) = server
        .post(
            &format!("{path}/heartbeat"),
            json!({"zone": "z".repeat(256)}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_zone");
    assert_eq!(
        server.service(id).await["report_count"],
        0,
        "a rejected beat counts nothing"
    );
}

#[tokio::test]
async fn a_database_path_that_cannot_be_created_is_one_clear_error() {
    let dir = temp_dir();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let mut config = Backend::Sqlite.config(dir.path());
    config.database = Some(format!("sqlite://{}/sub/vigil.db", blocker.display()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = vigil_server::serve(listener, config, std::future::pending())
        .await
        .expect_err("cannot start");
    let text = err.to_string();
    assert!(text.contains(&blocker.display().to_string()), "{text}");
    assert!(!text.contains('\n'), "one line: {text}");
}

#[tokio::test]
async fn health_and_readiness() {
    let (_dir, server) = server().await;
    let (status, body) = server.get("/healthz").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, body) = server.get("/readyz").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
}

#[tokio::test]
async fn lenient_where_it_is_harmless() {
    let (_dir, server) = server().await;
    let id = server.register("h", "b").await;
    let response = server
        .http
        .post(format!("{}/v1/services/{id}/heartbeat", server.url))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "an empty JSON body is a beat"
    );
    let (status, _) = server
        .post(&format!("/v1/services/{id}/heartbeat"), json!({"zone": ""}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server.service(id).await["zone"],
        "nova",
        "an empty zone changes nothing"
    );
    let path = format!("/v1/services/{id}");
    server
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"disabled": true, "disabled_reason": "x"})),
        )
        .await;
    let (_, body) = server
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"disabled": false, "disabled_reason": "y"})),
        )
        .await;
    assert!(
        body["disabled_reason"].is_null(),
        "enabling clears the reason: {body}"
    );
}

/// A raw request over a fresh connection; returns the whole answer as text.
async fn raw(server: &TestServer, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// What hyper answers by itself, before any handler runs, carries our error body too.
#[tokio::test]
async fn unparsable_requests_get_our_error_body() {
    let (_dir, server) = server().await;
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "y".repeat(1 << 20)
    );
    let cases: [(&[u8], &str, &str); 3] = [
        (b"NOT HTTP AT ALL\r\n\r\n", "400", "invalid_http"),
        (
            b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",
            "400",
            "invalid_http",
        ),
        (huge_header.as_bytes(), "431", "headers_too_large"),
    ];
    for (request, status, code) in cases {
        let answer = raw(&server, request).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
        let body: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{answer}"));
        assert_error(
            StatusCode::from_u16(status.parse().unwrap()).unwrap(),
            &body,
            StatusCode::from_u16(status.parse().unwrap()).unwrap(),
            code,
        );
        assert!(answer
            .to_lowercase()
            .contains("content-type: application/json"));
    }
    // The server is none the worse.
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK);
}

/// A NUL in a query is a 400 on every backend (PostgreSQL refuses NUL in text: a 500 before).
async fn nul_in_queries_is_a_400(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(backend.config(dir.path())).await;
    let id = server.register("h", "b").await;
    for path in [
        "/v1/events?host=%00".to_string(),
        "/v1/events?binary=a%00b".to_string(),
        format!("/v1/services/{id}/events?host=%00"),
        "/v1/services?host=%00".to_string(),
        "/v1/events/stream?host=%00".to_string(),
    ] {
        let (status, body) = server.get(&path).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_query");
    }
}

crate::each_backend!(nul_in_queries_is_a_400);

/// A Cinder client pointed at the main port is told where the Cinder-compatible API is.
#[tokio::test]
async fn cinder_paths_on_the_main_port_point_to_the_cinder_listener() {
    let (_dir, server) = server().await;
    let (status, body) = server.get("/v3/os-services").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--cinder-listen"),
        "{body}"
    );
}

/// The token routes answer malformed input with our error body, and never a 5xx.
#[tokio::test]
async fn token_requests_are_checked() {
    let (_dir, server) = server().await;
    let url = format!("{}/v1/tokens", server.url);
    for (body, content_type, want_status, want_code) in [
        (
            &b"{\"name\": "[..],
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            b"[]",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            b"{\"name\": \"x\"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            b"{\"name\": \"x\", \"role\": \"root\"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            b"{\"name\": \"x\", \"role\": \"reader\", \"extra\": 1}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            b"{\"name\": \"x\", \"role\": \"agent\", \"hosts\": \"stor-*\"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            b"{\"name\": \"x\", \"role\": \"reader\", \"expires_in_s\": 1e300}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_expires_in",
        ),
        (
            b"{\"name\": \"\\u0000\", \"role\": \"reader\"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_token",
        ),
        (
            b"{\"name\": \"x\", \"role\": \"reader\"}",
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
    ] {
        let response = server
            .http
            .post(&url)
            .bearer_auth(crate::harness::TOKEN)
            .header("content-type", content_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_error(status, &answer, want_status, want_code);
    }
    for path in ["/v1/tokens/nobody", "/v1/tokens/%00", "/v1/tokens/a%20b"] {
        let (status, body) = server.admin(Method::DELETE, path, None).await;
        assert!(status.is_client_error(), "{path}: {status} {body}");
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
    }
    // A name that is not UTF-8 once decoded: our body, not the router's plain text.
    for path in ["/v1/tokens/%FF", "/v1/maintenance/%FF", "/v1/services/%FF"] {
        let (status, body) = server.admin(Method::DELETE, path, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
    }
    let (status, body) = server.request(Method::GET, "/v1/tokens", None, None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
}
