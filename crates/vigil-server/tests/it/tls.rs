//! TLS on the listeners, with certificates made at run time (`rcgen`): the story of a service
//! over HTTPS on every backend, HTTP/2 by ALPN (a reporter group's batches over it), names
//! verified, and a certificate reloaded on SIGHUP without dropping the connections open.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use vigil_reporter::{Reporter, ReporterGroup};

use crate::harness::{eventually, temp_dir, Backend, TestServer, AGENT_TOKEN};

crate::each_backend!(a_service_lives_and_stops_over_https);

/// A certificate authority and a server certificate it signed for 127.0.0.1 (and
/// `localhost`): the CA's PEM, written with the server's chain and key into `dir`.
fn certificates(dir: &Path, authority: &str) -> String {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, authority);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    ca.pem()
}

fn tls_config(backend: &Backend, dir: &Path) -> vigil_server::Config {
    let mut config = backend.config(dir);
    config.auth = vigil_server::AuthConfig::default();
    config.tls_cert = Some(dir.join("cert.pem"));
    config.tls_key = Some(dir.join("key.pem"));
    config
}

async fn a_service_lives_and_stops_over_https(backend: Backend) {
    let dir = temp_dir();
    let ca = certificates(dir.path(), "vigil test ca");
    std::fs::write(dir.path().join("ca.pem"), &ca).unwrap();
    let server = TestServer::start_tls(tls_config(&backend, dir.path()), &ca).await;
    let handle = Reporter::builder(&server.url, "node-1", "cinder-volume")
        .report_interval(Duration::from_millis(200))
        .token(AGENT_TOKEN)
        .ca_file(dir.path().join("ca.pem"))
        .start()
        .expect("reporter starts");
    eventually(
        "the reporter beats over https",
        Duration::from_secs(10),
        || async { handle.report_count() >= 2 },
    )
    .await;
    let id = handle.service_id().unwrap();
    assert_eq!(server.service(id).await["state"], "up");
    // A clean stop, announced over TLS with the agent token: `stopped` at once, with its event.
    handle.shutdown().await;
    eventually(
        "stopped, announced over https",
        Duration::from_secs(10),
        || async { server.service(id).await["state"] == "stopped" },
    )
    .await;
    eventually("the stopped event", Duration::from_secs(10), || async {
        let (_, events) = server.get(&format!("/v1/services/{id}/events")).await;
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "stopped" && e["actor"] == "agent")
    })
    .await;
    // The admin token crosses the wire encrypted; the change is made.
    let (status, _) = server
        .admin(
            Method::PATCH,
            &format!("/v1/services/{id}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // A client that does not trust the CA is refused by its own check of the name and chain;
    // plain HTTP to the TLS port gets no answer.
    let strict = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    assert!(strict
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .is_err());
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", server.addr))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // HTTP/2 by ALPN: a batch of beats shares one connection.
    let h2 = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let response = h2
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    // The Cinder-compatible API and the metrics listener speak TLS with the same certificate.
    for url in [
        format!("{}/v3/os-services", server.cinder_url.as_ref().unwrap()),
        format!("{}/metrics", server.metrics_url.as_ref().unwrap()),
    ] {
        let response = h2.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        assert!(strict.get(&url).send().await.is_err(), "{url}");
    }
}

/// Requests the server received over `protocol` (`HTTP/1.1`, `HTTP/2`), from `/metrics`.
async fn requests_over(server: &TestServer, protocol: &str) -> f64 {
    let text = server
        .http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("vigil_http_requests_by_protocol_total{{protocol=\"{protocol}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// The reporter crate speaks HTTP/2 to a TLS server (ALPN), without being asked: a group's
/// registrations and batches of beats all arrive over h2, none over HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reporter_group_beats_over_h2() {
    let dir = temp_dir();
    let ca = certificates(dir.path(), "vigil test ca");
    std::fs::write(dir.path().join("ca.pem"), &ca).unwrap();
    let server = TestServer::start_tls(tls_config(&Backend::Sqlite, dir.path()), &ca).await;
    let group = ["cinder-volume", "cinder-backup", "cinder-scheduler"]
        .into_iter()
        .fold(ReporterGroup::builder(), |group, binary| {
            group.service(
                Reporter::builder(&server.url, "node-1", binary)
                    .report_interval(Duration::from_millis(200))
                    .token(AGENT_TOKEN)
                    .ca_file(dir.path().join("ca.pem")),
            )
        })
        .start()
        .expect("the group starts");
    eventually(
        "every service of the group beats over https",
        Duration::from_secs(10),
        || async { group.report_counts().iter().all(|&n| n >= 3) },
    )
    .await;
    for id in group.service_ids() {
        let id = id.expect("registered");
        assert_eq!(server.service(id).await["state"], "up");
    }
    group.shutdown().await;
    // Three registrations and at least three batches (and the test's own reads) over h2.
    let h2 = requests_over(&server, "HTTP/2").await;
    assert!(h2 >= 6.0, "{h2} requests over HTTP/2");
    assert_eq!(requests_over(&server, "HTTP/1.1").await, 0.0);
}

/// SIGHUP reloads the certificate: new connections get the new one, the connection already
/// open keeps working. A reload that fails (a key that does not match) keeps the one in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let dir = temp_dir();
    let first = certificates(dir.path(), "first ca");
    let server = TestServer::start_tls(tls_config(&Backend::Sqlite, dir.path()), &first).await;
    // A kept-alive connection, opened under the first certificate.
    let (status, _) = server.get("/v1/services").await;
    assert_eq!(status, StatusCode::OK);

    let staging = temp_dir();
    let second = certificates(staging.path(), "second ca");
    let trusting_second = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(second.as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = format!("{}/healthz", server.url);
    assert!(trusting_second.get(&url).send().await.is_err());

    // A broken pair first: the reload fails and the first certificate stays.
    std::fs::copy(staging.path().join("cert.pem"), dir.path().join("cert.pem")).unwrap();
    raise_sighup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh_first = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(first.as_bytes()).unwrap())
        .build()
        .unwrap();
    assert_eq!(
        fresh_first.get(&url).send().await.unwrap().status(),
        StatusCode::OK,
        "a failed reload keeps the certificate in use"
    );

    std::fs::copy(staging.path().join("key.pem"), dir.path().join("key.pem")).unwrap();
    raise_sighup();
    eventually(
        "new connections get the new certificate",
        Duration::from_secs(5),
        || async { trusting_second.get(&url).send().await.is_ok() },
    )
    .await;
    // The connection opened before the reload still serves.
    let (status, _) = server.get("/v1/services").await;
    assert_eq!(status, StatusCode::OK);
}

fn raise_sighup() {
    // SAFETY: raising a signal this process handles (the server installed its handler before
    // it listened).
    let raised = unsafe { libc::raise(libc::SIGHUP) };
    assert_eq!(raised, 0);
}
