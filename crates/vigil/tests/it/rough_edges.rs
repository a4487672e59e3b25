//! The frictions a new user met (issue 17), each as the user met it: the built binary against a
//! real server.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::cli::{register, text, vigil, ServerProcess};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn json(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

/// `vigil` with only the arguments given: no --server or --data-dir added.
fn bare(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(VIGIL)
        .args(args)
        .current_dir(cwd)
        .env_remove("VIGIL_ADMIN_TOKEN")
        .env("VIGIL_AGENT_TOKEN", crate::AGENT_TOKEN)
        .env_remove("VIGIL_DATA_DIR")
        .env_remove("VIGIL_URL")
        .output()
        .unwrap()
}

#[test]
fn a_missing_admin_token_says_where_it_was_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    register(&server.url, "node-1", "cinder-volume");
    let elsewhere = tempfile::tempdir().unwrap();
    // Run from another directory, as the user did: ./vigil-data/admin.token is not there.
    let out = bare(
        &[
            "service",
            "disable",
            "node-1",
            "cinder-volume",
            "--server",
            &server.url,
        ],
        elsewhere.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let looked = elsewhere
        .path()
        .canonicalize()
        .unwrap()
        .join("vigil-data/admin.token");
    for needle in [
        "unauthorized",
        looked.to_str().unwrap(),
        "does not exist",
        "--token",
        "VIGIL_ADMIN_TOKEN",
        "--data-dir",
    ] {
        assert!(stderr.contains(needle), "{needle:?} missing from {stderr}");
    }
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // A token file of another server: the refusal names the file.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("admin.token"), "not-this-servers-token\n").unwrap();
    let out = vigil(
        &["service", "enable", "node-1", "cinder-volume"],
        other.path(),
        &server.url,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unauthorized") && stderr.contains("admin.token was refused"),
        "{stderr}"
    );
}

#[test]
fn a_server_without_scheme_is_http_and_a_bad_url_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    register(&server.url, "node-1", "cinder-volume");
    let bare_addr = server.url.trim_start_matches("http://");
    let out = vigil(&["service", "list", "--json"], dir.path(), bare_addr);
    assert_eq!(json(&out)[0]["host"], "node-1");
    for bad in [
        "ftp://127.0.0.1:8799",
        "http://",
        "http://127.0.0.1:8799/?x=1",
        "::",
    ] {
        let out = vigil(&["service", "list"], dir.path(), bad);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out.stderr));
    }
    // The agent takes the same form.
    let out = Command::new(VIGIL)
        .env("VIGIL_AGENT_TOKEN", crate::AGENT_TOKEN)
        .args([
            "agent", "--server", "ftp://x", "--binary", "b", "--", "true",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn bad_option_values_exit_2_and_since_takes_relative_times() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    register(&server.url, "node-1", "cinder-volume");
    for args in [
        &["service", "list", "--state", "sideways"][..],
        &["service", "list", "--status", "off"],
        &["events", "--limit", "5000"],
        &["events", "--limit", "0"],
        &["events", "--kind", "exploded"],
        &["events", "--since", "yesterday"],
        &["watch", "--kind", "exploded"],
    ] {
        let out = vigil(args, dir.path(), &server.url);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let recent = json(&vigil(
        &["events", "--since", "1h", "--json"],
        dir.path(),
        &server.url,
    ));
    assert_eq!(recent.as_array().unwrap().len(), 1, "{recent}");
    assert_eq!(recent[0]["kind"], "registered");
    let out = vigil(
        &["events", "--since", "30m", "--kind", "registered"],
        dir.path(),
        &server.url,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let future = json(&vigil(
        &["events", "--since", "2999-01-01T00:00:00Z", "--json"],
        dir.path(),
        &server.url,
    ));
    assert!(future.as_array().unwrap().is_empty());
    let listed = json(&vigil(
        &["service", "list", "--state", "up", "--json"],
        dir.path(),
        &server.url,
    ));
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[test]
fn an_agent_whose_command_cannot_run_registers_nothing_and_exits_as_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let not_executable = dir.path().join("script.sh");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").unwrap();
    for (command, code) in [
        ("/nonexistent/cmd", 127),
        ("no-such-command-anywhere", 127),
        (not_executable.to_str().unwrap(), 126),
    ] {
        let out = Command::new(VIGIL)
            .env("VIGIL_AGENT_TOKEN", crate::AGENT_TOKEN)
            .args([
                "agent",
                "--server",
                &server.url,
                "--host",
                "h",
                "--binary",
                "b",
            ])
            .args(["--report-interval", "0.2", "--", command])
            .env("VIGIL_LOG", "warn")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{command}: {}",
            text(&out.stderr)
        );
        let stderr = text(&out.stderr);
        assert!(stderr.starts_with("vigil: cannot run command"), "{stderr}");
    }
    let listed = json(&vigil(
        &["service", "list", "--json"],
        dir.path(),
        &server.url,
    ));
    assert!(listed.as_array().unwrap().is_empty(), "{listed}");
}

#[test]
fn admin_commands_print_json_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    register(&server.url, "node-1", "cinder-volume");
    let url = &server.url;
    let d = dir.path();
    let disabled = json(&vigil(
        &[
            "service",
            "disable",
            "node-1",
            "cinder-volume",
            "--reason",
            "disk swap",
            "--json",
        ],
        d,
        url,
    ));
    assert_eq!(
        (
            disabled["status"].as_str(),
            disabled["disabled_reason"].as_str()
        ),
        (Some("disabled"), Some("disk swap"))
    );
    let enabled = json(&vigil(
        &["service", "enable", "node-1", "cinder-volume", "--json"],
        d,
        url,
    ));
    assert_eq!(enabled["status"], "enabled");
    let forced = json(&vigil(
        &["service", "force-down", "node-1", "cinder-volume", "--json"],
        d,
        url,
    ));
    assert_eq!(
        (forced["forced_down"].as_bool(), forced["state"].as_str()),
        (Some(true), Some("down"))
    );
    let unforced = json(&vigil(
        &[
            "service",
            "force-down",
            "node-1",
            "cinder-volume",
            "--unset",
            "--json",
        ],
        d,
        url,
    ));
    assert_eq!(unforced["forced_down"], false);
    let deleted = json(&vigil(
        &[
            "service",
            "delete",
            "node-1",
            "cinder-volume",
            "--force",
            "--json",
        ],
        d,
        url,
    ));
    assert_eq!(
        (deleted["host"].as_str(), deleted["binary"].as_str()),
        (Some("node-1"), Some("cinder-volume"))
    );
    let listed = json(&vigil(&["service", "list", "--json"], d, url));
    assert!(listed.as_array().unwrap().is_empty());
}

#[test]
fn an_unknown_host_named_as_an_argument_is_an_error_everywhere_a_filter_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    register(&server.url, "node-1", "cinder-volume");
    let (d, url) = (dir.path(), &server.url);
    for args in [
        &["events", "nohost"][..],
        &["events", "nohost", "cinder-volume"],
        &["events", "node-1", "nobinary"],
        &["doctor", "nohost"],
        &["doctor", "nohost", "cinder-volume"],
        &["service", "show", "nohost", "cinder-volume"],
    ] {
        let out = vigil(args, d, url);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&out.stdout)
        );
        assert!(
            text(&out.stderr).starts_with("vigil: no service"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    for args in [
        &["events", "--host", "nohost"][..],
        &["service", "list", "--host", "nohost"],
    ] {
        let out = vigil(args, d, url);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = vigil(&["events", "node-1"], d, url);
    assert!(out.status.success() && text(&out.stdout).contains("registered"));
    // A deleted service's history is still there, so its host is still known to `events`.
    assert!(vigil(
        &["service", "delete", "node-1", "cinder-volume", "--force"],
        d,
        url
    )
    .status
    .success());
    let out = vigil(&["events", "node-1", "--json"], d, url);
    // `down` too when the machine is slow enough for its service_down_time (1 s) to pass.
    let kinds: Vec<String> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("deleted"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("registered"),
        "{kinds:?}"
    );
}

#[test]
fn service_list_reads_as_cinder_s_by_binary_then_host() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    for (host, binary) in [
        ("node-2", "cinder-volume"),
        ("node-1", "cinder-volume"),
        ("node-3", "cinder-backup"),
        ("node-1", "cinder-scheduler"),
    ] {
        register(&server.url, host, binary);
    }
    let listed = json(&vigil(
        &["service", "list", "--json"],
        dir.path(),
        &server.url,
    ));
    let order: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}@{}",
                s["binary"].as_str().unwrap(),
                s["host"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            "cinder-backup@node-3",
            "cinder-scheduler@node-1",
            "cinder-volume@node-1",
            "cinder-volume@node-2"
        ]
    );
    let table = text(&vigil(&["service", "list"], dir.path(), &server.url).stdout);
    let rows: Vec<&str> = table.lines().filter(|l| l.contains("cinder-")).collect();
    assert!(
        rows[0].contains("cinder-backup") && rows[3].contains("node-2"),
        "{table}"
    );
    // Before its first heartbeat a service has no Updated At, as in cinder.
    assert!(rows.iter().all(|r| r.contains("| - ")), "{table}");
}

/// A malformed `--watch` stops the start with one clear line that names the value and the
/// expected form, and writes nothing (no token, no database).
#[test]
fn a_malformed_watch_is_one_clear_line_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (value, needle) in [
        ("bogus", "expected KIND:URL"),
        ("swift:mysql://root@db/swift", "unknown kind \"swift\""),
        ("cinder:ftp://db/cinder", "the url must start with mysql://"),
    ] {
        let out = bare(
            &[
                "server",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data.to_str().unwrap(),
                "--watch",
                value,
            ],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(1), "{value}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("malformed watch") && stderr.contains(needle),
            "{value}: {stderr}"
        );
        assert!(!data.join("admin.token").exists());
    }
}

/// `vigil events | head -1`: the reader goes away early, and the command ends quietly (by
/// SIGPIPE, as Unix tools do), not with a panic on its closed stdout.
#[test]
fn a_closed_pipe_ends_a_listing_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    for n in 0..3 {
        register(&server.url, &format!("pipe-{n}"), "cinder-volume");
    }
    let mut child = Command::new(VIGIL)
        .args(["service", "list", "--server", &server.url, "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end at once: the listing's writes meet a closed pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.status.success() || stderr.is_empty(), "{stderr}");
}
