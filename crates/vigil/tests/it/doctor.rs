//! `vigil doctor` run against the real server on 127.0.0.1:0.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::Command;
use vigil_server::Config;

const TOKEN: &str = "cli-test-token";

/// A real server for the duration of a test.
struct Server {
    url: String,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            service_down_time: 60.0,
            flush_interval: 0.1,
            admin_token: Some(TOKEN.into()),
            ..Config::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(vigil_server::serve(listener, config, async {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::new();
        for _ in 0..500 {
            if http.get(format!("{url}/healthz")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Server {
            url,
            http,
            _stop: stop,
            _dir: dir,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }
}

/// Runs `vigil` with `args`; returns the exit code, stdout and stderr.
async fn vigil(args: &[&str]) -> (i32, String, String) {
    let data_dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir.path())
        .env_remove("VIGIL_URL")
        .env_remove("VIGIL_ADMIN_TOKEN")
        .env("VIGIL_AGENT_TOKEN", crate::AGENT_TOKEN)
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_exit_codes_text_and_json() {
    let server = Server::start().await;
    let url = server.url.as_str();
    let service = server
        .call(
            reqwest::Method::POST,
            "/v1/services",
            json!({"host": "node-1", "binary": "cinder-volume", "report_interval": 0.2}),
        )
        .await;
    let id = service["id"].as_i64().unwrap();
    server
        .call(
            reqwest::Method::POST,
            &format!("/v1/services/{id}/heartbeat"),
            json!({}),
        )
        .await;

    let (code, out, err) = vigil(&["doctor", "--server", url]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "the one service is ok\n"),
        "{err}"
    );

    let (code, out, err) = vigil(&[
        "doctor",
        "node-1",
        "cinder-volume",
        "--json",
        "--server",
        url,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown.as_array().unwrap().len(), 1);
    let findings = shown[0]["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 12);
    assert!(findings.iter().all(|f| f["severity"] == "ok"), "{out}");

    server
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/services/{id}"),
            json!({"forced_down": true}),
        )
        .await;
    let (code, out, err) = vigil(&["doctor", "--server", url]).await;
    assert_eq!(code, 1, "{err}");
    assert!(!out.contains('\x1b'), "no colour when piped: {out:?}");
    assert!(
        out.starts_with("cinder-volume on node-1 (id 1): down, enabled\n  error    forced_down "),
        "{out}"
    );
    assert!(
        out.contains("remedy: once the host is fenced and repaired: vigil service force-down node-1 cinder-volume --unset"),
        "{out}"
    );
    assert!(out.ends_with("  11 other checks ok\n"), "{out}");

    let (code, out, _) = vigil(&["doctor", "--json", "--server", url]).await;
    assert_eq!(code, 1);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown[0]["service"]["host"], "node-1");

    let (code, _, err) = vigil(&["doctor", "node-9", "--server", url]).await;
    assert_eq!(
        (code, err.as_str()),
        (1, "vigil: no service on host node-9\n")
    );

    let (code, _, err) = vigil(&["doctor", "--server", "http://127.0.0.1:1"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.starts_with("vigil: cannot reach vigil server"), "{err}");
}
