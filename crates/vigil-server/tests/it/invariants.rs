//! The architecture invariants that a test can hold (see ARCHITECTURE.md).

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// **Only `store/` knows Vigil's SQL**, and only `watch/reader.rs` the (read-only) SQL of a
/// watched OpenStack database: no other product code builds a query or names a table.
#[test]
fn only_the_store_knows_sql() {
    let root = workspace();
    let store = root.join("crates/vigil-server/src/store");
    let watch_reader = root.join("crates/vigil-server/src/watch/reader.rs");
    let mut files = Vec::new();
    for krate in std::fs::read_dir(root.join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    let sql = [
        "sqlx::query",
        "sqlx::raw_sql",
        "QueryBuilder",
        "SELECT ",
        "INSERT INTO",
        "DELETE FROM",
        "CREATE TABLE",
        " SET value",
    ];
    let mut offenders = Vec::new();
    for file in files
        .iter()
        .filter(|f| !f.starts_with(&store) && **f != watch_reader)
    {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if sql.iter().any(|needle| line.contains(needle)) {
                offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "SQL outside store/:\n{}",
        offenders.join("\n")
    );
}

/// **The reporter crate never depends on the server crates, axum or sqlx**, not even
/// through another crate, so that a service embedding it pulls in none of them.
#[test]
fn the_reporter_depends_on_no_server_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--frozen"])
        .current_dir(workspace())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = metadata["resolve"]["nodes"].as_array().unwrap();
    let name_of = |id: &str| -> String {
        metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .map(|p| p["name"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let root = nodes
        .iter()
        .find(|n| name_of(n["id"].as_str().unwrap()) == "vigil-reporter")
        .expect("vigil-reporter in the workspace");
    // Normal (not dev, not build) dependencies, transitively.
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![root["id"].as_str().unwrap().to_string()];
    while let Some(id) = todo.pop() {
        let node = nodes.iter().find(|n| n["id"] == id.as_str()).unwrap();
        for dep in node["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let dep_id = dep["pkg"].as_str().unwrap().to_string();
            if normal && seen.insert(dep_id.clone()) {
                todo.push(dep_id);
            }
        }
    }
    let names: Vec<String> = seen.iter().map(|id| name_of(id)).collect();
    for forbidden in ["vigil-server", "vigil", "axum", "sqlx", "sqlx-core"] {
        assert!(
            !names.iter().any(|n| n == forbidden),
            "vigil-reporter depends on {forbidden}: {names:?}"
        );
    }
}
