//! `vigil maintenance start|list|end` against the built server, with its generated admin token.

use serde_json::Value;

use crate::cli::{register, text, vigil, ServerProcess};

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)))
}

#[test]
fn maintenance_windows_are_started_listed_and_ended() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    register(&server.url, "node-1", "cinder-volume");
    register(&server.url, "node-1", "cinder-backup");
    let run = |args: &[&str]| vigil(args, dir.path(), &server.url);

    let out = run(&[
        "maintenance",
        "start",
        "node-1",
        "cinder-volume",
        "--for",
        "2h",
        "--reason",
        "disk swap",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for word in [
        "Id",
        "Reason",
        "node-1",
        "cinder-volume",
        "disk swap",
        "admin",
        "active",
    ] {
        assert!(table.contains(word), "{word}: {table}");
    }
    let out = run(&[
        "maintenance",
        "start",
        "node-1",
        "--for",
        "90m",
        "--reason",
        "reboot",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let whole_host = json(&out);
    assert_eq!(whole_host[0]["binary"], Value::Null);
    assert_eq!(whole_host[0]["active"], true);

    let out = run(&["maintenance", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = json(&out);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let first = listed[0]["id"].as_i64().unwrap();
    let out = run(&["maintenance", "list"]);
    let table = text(&out.stdout);
    assert!(table.contains("| *") && table.contains("reboot"), "{table}");

    // The service table says so beside the state.
    let out = run(&["service", "list"]);
    let table = text(&out.stdout);
    assert_eq!(table.matches("(maintenance)").count(), 2, "{table}");

    // End one by id, the rest by host; then there is none left to end.
    let out = run(&["maintenance", "end", &first.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ended by admin at"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["maintenance", "end", "node-1", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ended = json(&out);
    assert_eq!(ended.as_array().unwrap().len(), 1);
    assert_eq!(ended[0]["reason"], "reboot");
    let out = run(&["maintenance", "end", "node-1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no maintenance window holds for host node-1"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["maintenance", "end", &first.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("maintenance_not_found"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["maintenance", "list", "--json"]);
    assert_eq!(json(&out), serde_json::json!([]));
    let out = run(&["maintenance", "list", "--all", "--json"]);
    let all = json(&out);
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .all(|w| w["ended_by"] == "admin"));
    let out = run(&["service", "list"]);
    assert!(!text(&out.stdout).contains("(maintenance)"));

    // What the CLI can check itself is a usage error.
    for args in [
        &[
            "maintenance",
            "start",
            "node-1",
            "--for",
            "0s",
            "--reason",
            "x",
        ][..],
        &[
            "maintenance",
            "start",
            "node-1",
            "--for",
            "31d",
            "--reason",
            "x",
        ],
        &[
            "maintenance",
            "start",
            "node-1",
            "--for",
            "soon",
            "--reason",
            "x",
        ],
        &["maintenance", "start", "node-1", "--for", "1h"],
    ] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}
