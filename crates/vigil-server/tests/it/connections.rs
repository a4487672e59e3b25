//! Clients that hold connections open (idle keep-alives, slowloris heads) cannot lock out the
//! services heartbeating: the cap closes the connection idle the longest to make room, and a
//! head that does not arrive in time is cut off.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{temp_dir, Backend, TestServer, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_connections_never_make_a_live_service_look_dead() {
    let dir = temp_dir();
    let mut config = Backend::Sqlite.config(dir.path());
    config.service_down_time = 1.5;
    config.http.max_connections = Some(64);
    config.http.header_read_timeout = 1.0;
    let server = TestServer::start(config).await;
    let reporter =
        vigil_reporter::Reporter::builder(server.url.as_str(), "node-1", "cinder-volume")
            .report_interval(Duration::from_millis(200))
            .start()
            .expect("reporter starts");

    // Five times the cap: idle connections, and heads dribbled a byte at a time.
    let mut idle = Vec::new();
    for _ in 0..160 {
        if let Ok(stream) = TcpStream::connect(server.addr).await {
            idle.push(stream);
        }
    }
    let addr = server.addr;
    let dribblers = tokio::spawn(async move {
        let mut streams = Vec::new();
        for _ in 0..160 {
            if let Ok(mut stream) = TcpStream::connect(addr).await {
                let _ = stream
                    .write_all(b"GET /v1/services HTTP/1.1\r\nHost: x\r\n")
                    .await;
                streams.push(stream);
            }
        }
        loop {
            for stream in &mut streams {
                let _ = stream.write_all(b"X").await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });

    // A fresh client gets an answer every time, for three service_down_times.
    let start = Instant::now();
    let mut answered = 0;
    while start.elapsed() < Duration::from_millis(4500) {
        let fresh = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let response = fresh
            .get(format!("{}/v1/services", server.url))
            .send()
            .await
            .expect("a fresh client is answered while connections are held");
        assert_eq!(response.status(), StatusCode::OK);
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered > 10);
    dribblers.abort();

    let (_, body) = server.get("/v1/services").await;
    assert_eq!(body["services"][0]["state"], "up", "{body}");
    let (_, events) = server.get("/v1/events?kind=down").await;
    assert_eq!(
        events["events"],
        serde_json::json!([]),
        "false down: {events}"
    );
    reporter.stop();
    reporter.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_does_not_arrive_in_time_is_cut_off() {
    let dir = temp_dir();
    let mut config = Backend::Sqlite.config(dir.path());
    config.http.header_read_timeout = 0.5;
    let server = TestServer::start(config).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /v1/services HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("the server closes a slow head");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let dir = temp_dir();
    let mut config = Backend::Sqlite.config(dir.path());
    config.http.idle_timeout = 0.5;
    let server = TestServer::start(config).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle kept-alive connection stays open");
    assert!(answer.starts_with(b"HTTP/1.1 200 OK"));
}

/// A stop ends the event streams open: the drain does not wait out its limit (10 s) for a
/// client that would read for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_the_open_event_streams_at_once() {
    use futures_util::StreamExt;
    let dir = temp_dir();
    let mut server = TestServer::start(Backend::Sqlite.config(dir.path())).await;
    let response = server
        .http
        .get(format!("{}/v1/events/stream", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = body.next().await {} });
    let started = Instant::now();
    server.stop().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the stop waited {took:?} for the open event stream"
    );
    tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the stream ended")
        .unwrap();
}
