//! The dashboard (`GET /`, `/ui/...`): its routes and error answers over HTTP, the list API's
//! sorting and paging it reads, and the pages in a real Chromium (Debian's `chromium` and
//! `chromium-driver`, which `scripts/test` installs) driven through chromedriver over WebDriver.
//! Without them the browser test is skipped, except under CI where it fails.
//!
//! The browser test saves screenshots of the overview and a service page in
//! `target/dashboard-screenshots/` (under `CARGO_TARGET_DIR` when set).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{self, temp_dir, Backend, EventStream, TestServer, TOKEN};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_need_no_token_their_data_does_and_errors_are_json() {
    let dir = temp_dir();
    let mut config = Backend::Sqlite.config(dir.path());
    config.auth.anonymous_read = false;
    let server = TestServer::start(config).await;
    for page in ["/", "/ui/", "/ui/events", "/ui/services/1"] {
        let response = server
            .http
            .get(format!("{}{page}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{page}");
        assert_eq!(
            response.headers()["content-type"],
            "text/html; charset=utf-8"
        );
        assert!(response.headers().contains_key("content-security-policy"));
        let html = response.text().await.unwrap();
        assert!(html.contains("/ui/assets/app.js"), "{html}");
    }
    for (asset, kind) in [
        ("/ui/assets/app.js", "text/javascript; charset=utf-8"),
        ("/ui/assets/app.css", "text/css; charset=utf-8"),
        ("/ui/assets/icon.svg", "image/svg+xml"),
    ] {
        let response = server
            .http
            .get(format!("{}{asset}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        assert_eq!(response.headers()["content-type"], kind);
    }
    // The data the pages read needs the token, like every read of this server.
    let (status, body) = server.get("/ui/api/overview").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, body) = server.admin(Method::GET, "/ui/api/overview", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["all"]["total"], 0);
    // Errors are the API's JSON body.
    let (status, body) = server.get("/ui/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = server.get("/ui/services/abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_id");
    let (status, body) = server.request(Method::POST, "/", None, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let (status, body) = server
        .admin(Method::GET, "/ui/api/services/99/beats", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "service_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_sorts_pages_and_searches() {
    let dir = temp_dir();
    let server = TestServer::start(Backend::Sqlite.config(dir.path())).await;
    let mut ids = Vec::new();
    for host in ["delta", "alpha", "charlie", "bravo", "echo"] {
        ids.push(server.register(host, "cinder-volume").await);
    }
    let (status, body) = server
        .post(
            "/v1/services",
            json!({"host": "foxtrot", "binary": "cinder-backup", "zone": "az-9"}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let hosts = |body: &Value| -> Vec<String> {
        body["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["host"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, total, body) = list(&server, "?sort=host&limit=3").await;
    assert_eq!(total, Some(6));
    assert_eq!(hosts(&body), ["alpha", "bravo", "charlie"]);
    let (_, total, body) = list(&server, "?sort=-host&offset=1&limit=2").await;
    assert_eq!(total, Some(6));
    assert_eq!(hosts(&body), ["echo", "delta"]);
    let (_, total, body) = list(&server, "?sort=-id&limit=1").await;
    assert_eq!(total, Some(6));
    assert_eq!(hosts(&body), ["foxtrot"]);
    // Text search: any of the names, ASCII letters in either case; with the other filters.
    let (_, total, body) = list(&server, "?q=AZ-9").await;
    assert_eq!(total, None, "no paging asked, no count");
    assert_eq!(hosts(&body), ["foxtrot"]);
    let (_, total, body) = list(
        &server,
        "?q=volume&binary=cinder-volume&sort=zone&limit=100",
    )
    .await;
    assert_eq!(total, Some(5));
    assert_eq!(hosts(&body).len(), 5);
    let (_, total, body) = list(&server, "?q=nothing-like-it&limit=10").await;
    assert_eq!(total, Some(0));
    assert_eq!(body["services"], json!([]));
    // Every field sorts; a wrong one is a 400 that names them.
    for field in [
        "id",
        "binary",
        "topic",
        "status",
        "state",
        "updated_at",
        "last_heartbeat_age_s",
        "report_count",
        "report_interval",
        "suspicion",
        "source",
        "disabled_reason",
        "forced_down",
        "version",
    ] {
        let (status, total, _) = list(&server, &format!("?sort=-{field}")).await;
        assert_eq!(status, StatusCode::OK, "{field}");
        assert_eq!(total, Some(6), "{field}");
    }
    let (status, _, body) = list(&server, "?sort=colour").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_sort");
    let (status, _, body) = list(&server, "?limit=-1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_query");
    assert_eq!(ids.len(), 5);
}

/// `GET /v1/services{query}`: status, `X-Total-Count`, body.
async fn list(server: &TestServer, query: &str) -> (StatusCode, Option<usize>, Value) {
    let response = server
        .http
        .get(format!("{}/v1/services{query}", server.url))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let total = response
        .headers()
        .get("x-total-count")
        .map(|v| v.to_str().unwrap().parse::<usize>().unwrap());
    let body: Value = response.json().await.unwrap();
    (status, total, body)
}

/// A headless Chromium under chromedriver; dropping it ends both.
pub(crate) struct Browser {
    client: Client,
    driver: std::process::Child,
}

impl Drop for Browser {
    /// Ends chromedriver and the Chromium it started: they are a process group of their own.
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            // SAFETY: a signal to the process group this test started, and nothing else.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts chromedriver on a free port of 127.0.0.1 and a headless Chromium through it;
    /// `None` (skipped, said on stderr) without them, except under CI.
    pub(crate) async fn start() -> Option<Browser> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            assert!(
                !harness::under_ci(),
                "{CHROMIUM} and {CHROMEDRIVER} are required under CI (Debian's chromium and chromium-driver; scripts/test installs them)"
            );
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipping the dashboard's browser test: {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        use std::os::unix::process::CommandExt;
        let driver = std::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let browser = Browser {
            client: connect(port).await,
            driver,
        };
        browser
            .client
            .set_window_size(1400, 1000)
            .await
            .expect("size the window");
        Some(browser)
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("open the page");
    }

    /// The value of a JavaScript expression in the page.
    pub(crate) async fn eval(&self, expression: &str) -> Value {
        self.client
            .execute(&format!("return ({expression});"), Vec::new())
            .await
            .unwrap_or_else(|e| panic!("evaluate {expression}: {e}"))
    }

    /// Waits until `expression` is truthy in the page; panics after `limit` naming `what`.
    pub(crate) async fn until(&self, what: &str, limit: Duration, expression: &str) -> Duration {
        let start = Instant::now();
        loop {
            let value = self.eval(expression).await;
            if !(value.is_null()
                || value == json!(false)
                || value == json!(0)
                || value == json!(""))
            {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for: {what} ({expression}); page errors: {}",
                self.eval("window.vigilErrors").await
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"));
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Nothing on the browser's console at the level of an error or a warning (a script
    /// error, a failed load, a content-security-policy violation) since the last call, and no
    /// error the page itself caught.
    pub(crate) async fn assert_no_errors(&self, page: &str) {
        let errors = self.eval("window.vigilErrors").await;
        assert_eq!(errors, json!([]), "errors on {page}");
        let log = self
            .client
            .issue_cmd(ConsoleLog)
            .await
            .expect("read the browser's console");
        let bad: Vec<&Value> = log
            .as_array()
            .expect("the console is a list")
            .iter()
            .filter(|entry| matches!(entry["level"].as_str(), Some("SEVERE" | "WARNING")))
            .collect();
        assert!(bad.is_empty(), "the console of {page}: {bad:?}");
    }

    /// A picture of the page from its top, in a window tall enough for most of it.
    async fn screenshot(&self, name: &str) {
        self.client.set_window_size(1400, 1500).await.unwrap();
        self.eval("window.scrollTo(0, 0) || true").await;
        let png = self.client.screenshot().await.expect("a screenshot");
        self.client.set_window_size(1400, 1000).await.unwrap();
        let dir = screenshots();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

/// chromedriver's read of the browser's console (what it logged since the last read).
#[derive(Debug)]
struct ConsoleLog;

impl fantoccini::wd::WebDriverCompatibleCommand for ConsoleLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (Method, Option<String>) {
        (Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

async fn connect(port: u16) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--force-prefers-reduced-motion"],
        }),
    );
    let start = Instant::now();
    loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => return client,
            Err(err) => {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "chromedriver did not start a session: {err}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Where the screenshots go: `target/dashboard-screenshots/` of the workspace.
fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("dashboard-screenshots")
}

/// Beats the services in `alive` every 100 ms, at `url` (a restarted server is the same).
fn beat_forever(url: String, alive: Arc<Mutex<HashSet<i64>>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        loop {
            let ids: Vec<i64> = alive.lock().unwrap().iter().copied().collect();
            for id in ids {
                let _ = http
                    .post(format!("{url}/v1/services/{id}/heartbeat"))
                    .json(&json!({}))
                    .send()
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let dir = temp_dir();
    let mut server = TestServer::start(Backend::Sqlite.config(dir.path())).await;
    let url = server.url.clone();
    let mut ids = Vec::new();
    for (host, binary, zone) in [
        ("stor-a", "cinder-volume", "az-1"),
        ("stor-a", "cinder-backup", "az-1"),
        ("stor-b", "cinder-volume", "az-2"),
        ("stor-b", "cinder-backup", "az-2"),
        ("ctl-1", "cinder-scheduler", "az-1"),
    ] {
        let (status, body) = server
            .post(
                "/v1/services",
                json!({"host": host, "binary": binary, "zone": zone, "report_interval": 0.1}),
            )
            .await;
        assert!(status.is_success(), "{body}");
        ids.push(body["id"].as_i64().unwrap());
    }
    // A service whose interval cannot fit in service_down_time (1 s): the doctor says so.
    let (status, body) = server
        .post(
            "/v1/services",
            json!({"host": "ctl-2", "binary": "cinder-scheduler", "zone": "az-2", "report_interval": 5}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let misconfigured = body["id"].as_i64().unwrap();
    let alive = Arc::new(Mutex::new(ids.iter().copied().collect::<HashSet<i64>>()));
    let beats = beat_forever(url.clone(), alive.clone());
    server
        .eventually(
            "the misconfigured one down",
            Duration::from_secs(5),
            || async { server.service(misconfigured).await["state"] == "down" },
        )
        .await;

    // The overview: counts, rows, no error.
    browser.goto(&format!("{url}/")).await;
    browser
        .until(
            "the counts",
            Duration::from_secs(5),
            "document.querySelector('[data-count=total] .n')?.textContent === '6' && document.querySelector('[data-count=down] .n')?.textContent === '1' && document.querySelector('[data-count=up] .n')?.textContent === '5'",
        )
        .await;
    browser
        .until(
            "six rows",
            Duration::from_secs(5),
            "document.querySelectorAll('#services tbody tr[data-id]').length === 6",
        )
        .await;
    browser
        .until(
            "the zones",
            Duration::from_secs(5),
            "document.querySelectorAll('#zones tbody tr').length === 2",
        )
        .await;
    browser
        .until(
            "the live stream",
            Duration::from_secs(5),
            "document.getElementById('live').textContent === 'live'",
        )
        .await;
    browser.assert_no_errors("the overview").await;

    // Filter, then sort.
    browser.type_into("#filter-host", "stor-b").await;
    browser
        .until(
            "the host filter",
            Duration::from_secs(5),
            "[...document.querySelectorAll('#services tbody td.host')].map(c => c.textContent).join() === 'stor-b,stor-b'",
        )
        .await;
    assert!(browser
        .eval("location.search")
        .await
        .as_str()
        .unwrap()
        .contains("host=stor-b"));
    browser.type_into("#filter-host", "").await;
    browser
        .until(
            "the filter cleared",
            Duration::from_secs(5),
            "document.querySelectorAll('#services tbody tr[data-id]').length === 6",
        )
        .await;
    browser.click("th[data-sort=host] button").await;
    browser
        .until(
            "sorted by host",
            Duration::from_secs(5),
            "document.querySelector('th[data-sort=host]')?.getAttribute('aria-sort') === 'ascending' && document.querySelector('#services tbody td.host').textContent === 'ctl-1'",
        )
        .await;
    browser.click("th[data-sort=host] button").await;
    browser
        .until(
            "sorted by host, descending",
            Duration::from_secs(5),
            "document.querySelector('th[data-sort=host]')?.getAttribute('aria-sort') === 'descending' && document.querySelector('#services tbody td.host').textContent === 'stor-b'",
        )
        .await;

    // A service stops: its row turns red without a reload, within a second of its `down`.
    browser.eval("window.notReloaded = true").await;
    let victim = ids[2];
    let mut stream = EventStream::connect(&server, &format!("?service={victim}"), None).await;
    alive.lock().unwrap().remove(&victim);
    stream.until("down", Duration::from_secs(5)).await;
    let red = browser
        .until(
            "the stopped service's row red",
            Duration::from_secs(3),
            &format!("document.querySelector('#services tr[data-id=\"{victim}\"]')?.classList.contains('state-down')"),
        )
        .await;
    // Within a second as a rule (about 20 ms here); two to spare a loaded CI machine.
    assert!(
        red < Duration::from_secs(2),
        "red {red:?} after the down event"
    );
    assert_eq!(browser.eval("window.notReloaded").await, json!(true));
    browser
        .until(
            "the down count",
            Duration::from_secs(3),
            "document.querySelector('[data-count=down] .n')?.textContent === '2'",
        )
        .await;
    browser.screenshot("overview.png").await;

    // The service page of the misconfigured service: the doctor's finding and its advice.
    browser
        .goto(&format!("{url}/ui/services/{misconfigured}"))
        .await;
    browser
        .until(
            "the doctor's interval finding",
            Duration::from_secs(5),
            "document.querySelector('#findings [data-check=interval].error')?.textContent.includes('can never stay up') && document.querySelector('#findings [data-check=interval]').textContent.includes('Advice')",
        )
        .await;
    browser
        .until(
            "the history and the chart",
            Duration::from_secs(5),
            "document.querySelector('#timeline rect') && document.querySelector('#gaps-chart') && document.querySelectorAll('#service-events tbody tr').length >= 2",
        )
        .await;
    browser.assert_no_errors("a service page").await;

    // Disable from the page, with a reason: in the table and in the API.
    let disabled = ids[0];
    browser.goto(&format!("{url}/ui/services/{disabled}")).await;
    browser
        .until(
            "the actions",
            Duration::from_secs(5),
            "document.querySelector('[data-action=disable]')",
        )
        .await;
    browser.click("[data-action=disable]").await;
    browser.type_into("#field-reason", "disk sdb failed").await;
    browser.type_into("#field-token", "wrong-token").await;
    browser.click("#dialog-ok").await;
    // The API's words for a wrong token, as the API says them, in the dialog, which stays open.
    let (status, refusal) = server
        .request(
            Method::PATCH,
            &format!("/v1/services/{disabled}"),
            Some(json!({"disabled": true})),
            Some("wrong-token"),
        )
        .await;
    assert!(status.is_client_error(), "{refusal}");
    let words = refusal["error"]["message"].as_str().unwrap();
    browser
        .until(
            "the API's error in the dialog",
            Duration::from_secs(5),
            &format!(
                "!document.getElementById('dialog-error').hidden && document.getElementById('dialog-error').textContent === {}",
                json!(words)
            ),
        )
        .await;
    // (The browser logs that refusal on its console, as it does any refused request.)
    browser.client.issue_cmd(ConsoleLog).await.unwrap();
    browser.type_into("#field-token", TOKEN).await;
    browser.click("#dialog-ok").await;
    server
        .eventually(
            "disabled with the reason",
            Duration::from_secs(5),
            || async { server.service(disabled).await["disabled_reason"] == "disk sdb failed" },
        )
        .await;
    browser
        .until(
            "the page shows it disabled",
            Duration::from_secs(5),
            "!document.getElementById('dialog').open && document.querySelector('[data-action=enable]') && document.querySelector('[data-fact=\"Disabled reason\"]').textContent === 'disk sdb failed'",
        )
        .await;
    browser.screenshot("service.png").await;

    // The events page, with the filters of `vigil events`.
    browser.goto(&format!("{url}/ui/events?kind=down")).await;
    browser
        .until(
            "the down events",
            Duration::from_secs(5),
            "document.querySelectorAll('#events tbody tr').length >= 2 && [...document.querySelectorAll('#events tbody tr')].every(r => r.textContent.includes('down'))",
        )
        .await;
    browser.type_into("#filter-host", "stor-a").await;
    browser.click("#events-apply").await;
    browser
        .until(
            "stor-a's events",
            Duration::from_secs(5),
            "location.search === '?host=stor-a&kind=down' && !document.querySelector('#events') && document.querySelector('main .empty')?.textContent === 'No events.'",
        )
        .await;
    browser.assert_no_errors("the events page").await;
    browser.goto(&format!("{url}/")).await;
    browser
        .until(
            "the reason in the table",
            Duration::from_secs(5),
            &format!("document.querySelector('#services tr[data-id=\"{disabled}\"] td.disabled_reason')?.textContent === 'disk sdb failed'"),
        )
        .await;
    browser
        .until(
            "the live stream",
            Duration::from_secs(5),
            "document.getElementById('live').textContent === 'live'",
        )
        .await;
    browser.assert_no_errors("the overview").await;

    // The server goes away: a banner; it comes back: the page reconnects by itself and is live.
    browser.eval("window.notReloaded = true").await;
    server.stop().await;
    browser
        .until(
            "the connection-lost banner",
            Duration::from_secs(5),
            "!document.getElementById('banner').hidden",
        )
        .await;
    let mut config = server.config.clone();
    config.listen = server.addr.to_string();
    server = TestServer::start(config).await;
    let back = browser
        .until(
            "the banner gone",
            Duration::from_secs(10),
            "document.getElementById('banner').hidden && document.getElementById('live').textContent === 'live'",
        )
        .await;
    let other = ids[3];
    alive.lock().unwrap().remove(&other);
    browser
        .until(
            "a row red after the restart",
            Duration::from_secs(5),
            &format!("document.querySelector('#services tr[data-id=\"{other}\"]')?.classList.contains('state-down')"),
        )
        .await;
    assert_eq!(browser.eval("window.notReloaded").await, json!(true));
    assert_eq!(server.service(other).await["state"], "down");
    eprintln!(
        "dashboard: a down row red {red:?} after its event; reconnected {back:?} after the restart"
    );
    beats.abort();

    // A server whose reads need the token: the page opens, says what it needs, and once the
    // token is entered shows the data and goes live. (A new tab: the token is the tab's.)
    let private = temp_dir();
    let mut config = Backend::Sqlite.config(private.path());
    config.auth.anonymous_read = false;
    let locked = TestServer::start(config).await;
    locked.register("stor-z", "cinder-volume").await;
    let tab = browser.client.new_window(true).await.expect("a new tab");
    browser.client.switch_to_window(tab.handle).await.unwrap();
    browser.goto(&format!("{}/", locked.url)).await;
    let (status, refusal) = locked.get("/ui/api/overview").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refusal}");
    let words = refusal["error"]["message"].as_str().unwrap();
    browser
        .until(
            "the page asks for the token",
            Duration::from_secs(5),
            &format!(
                "document.querySelector('#counts .error')?.textContent === {} && document.getElementById('banner').textContent.includes('admin token')",
                json!(words)
            ),
        )
        .await;
    browser.click("#token-button").await;
    browser.type_into("#field-token", TOKEN).await;
    browser.click("#dialog-ok").await;
    browser
        .until(
            "the data and the stream with the token",
            Duration::from_secs(5),
            "document.querySelector('[data-count=total] .n')?.textContent === '1' && document.getElementById('live').textContent === 'live' && document.getElementById('banner').hidden",
        )
        .await;
    let _ = browser.client.clone().close().await;
}

/// The first render of the overview at 100,000 services, in Chromium: a measurement for
/// BENCHMARKS.md, not a check (run it on a quiet machine, in release):
/// `cargo test -p vigil-server --features bench --release --test it ui::bench -- --ignored --nocapture`.
#[cfg(feature = "bench")]
mod bench {
    use std::time::{Duration, Instant};

    use serde_json::json;
    use vigil_server::store::NewService;

    use super::Browser;
    use crate::harness::{temp_dir, Backend, TestServer};

    const SERVICES: usize = 100_000;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement for BENCHMARKS.md; see the module's doc"]
    async fn first_render_at_100000_services() {
        let Some(browser) = Browser::start().await else {
            return;
        };
        let dir = temp_dir();
        let mut config = Backend::Sqlite.config(dir.path());
        config.service_down_time = 60.0;
        let store = vigil_server::open_store(&config).await.unwrap();
        let binaries = [
            "cinder-volume",
            "cinder-scheduler",
            "cinder-backup",
            "nova-compute",
        ];
        let fleet: Vec<NewService> = (0..SERVICES)
            .map(|i| NewService {
                host: format!("node-{:07}.example.net", i / binaries.len()),
                binary: binaries[i % binaries.len()].into(),
                topic: None,
                zone: format!("az-{}", i % 3 + 1),
                report_interval: 10.0,
                version: Some("2025.1".into()),
                service_down_time: None,
            })
            .collect();
        store
            .bulk_insert_services(&fleet, chrono::Utc::now())
            .await
            .unwrap();
        drop(store);
        let server = TestServer::start(config).await;
        let url = server.url.clone();
        // The API calls the page makes, each timed alone (after one unmeasured round).
        let mut api = Vec::new();
        for path in [
            "/ui/api/overview",
            "/v1/services?sort=id&offset=0&limit=50",
            "/v1/services?sort=-last_heartbeat_age_s&offset=0&limit=50",
            "/v1/services?q=node-0012&sort=host&offset=0&limit=50",
            "/v1/events?limit=10",
        ] {
            let mut best = Duration::MAX;
            for _ in 0..6 {
                let started = Instant::now();
                let response = server
                    .http
                    .get(format!("{url}{path}"))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                response.bytes().await.unwrap();
                best = best.min(started.elapsed());
            }
            api.push(json!({"path": path, "best_ms": best.as_secs_f64() * 1000.0}));
        }
        // First render: from navigation start to the counts and the first page of the table.
        let mut renders = Vec::new();
        for _ in 0..5 {
            browser.goto(&format!("{url}/")).await;
            browser
                .until(
                    "the first render",
                    Duration::from_secs(30),
                    "performance.getEntriesByName('vigil:services').length && performance.getEntriesByName('vigil:counts').length",
                )
                .await;
            let counts = browser
                .eval("performance.getEntriesByName('vigil:counts')[0].startTime")
                .await;
            let table = browser
                .eval("performance.getEntriesByName('vigil:services')[0].startTime")
                .await;
            let total = browser
                .eval("document.querySelector('[data-count=total] .n').textContent")
                .await;
            assert_eq!(total, json!(SERVICES.to_string()));
            renders.push(json!({"counts_ms": counts, "table_ms": table}));
        }
        eprintln!(
            "{}",
            json!({"services": SERVICES, "api": api, "first_render": renders})
        );
        let _ = browser.client.clone().close().await;
    }
}
