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
/// watched OpenStack database: no other product code builds a query or names a table (but the
/// benchmark's fixture of a Cinder table, behind the `bench` feature).
#[test]
fn only_the_store_knows_sql() {
    let root = workspace();
    let store = root.join("crates/vigil-server/src/store");
    let watch_reader = root.join("crates/vigil-server/src/watch/reader.rs");
    // `vigil bench --scenario watch`'s throw-away Cinder table (the `bench` feature only).
    let bench_fixture = root.join("crates/vigil-server/src/watch/bench_fixture.rs");
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
        .filter(|f| !f.starts_with(&store) && **f != watch_reader && **f != bench_fixture)
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
    // This machine's platform only: `cargo metadata` would otherwise need every package of
    // every platform's dependencies downloaded (`half`'s `crunchy` is for SPIR-V), which a
    // build does not fetch.
    let rustc = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names its host");
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--frozen"])
        .args(["--filter-platform", &host])
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

/// The server's top-level modules (a file `src/x.rs` with its folder `src/x/`) and, for each,
/// the other top-level modules its code names (`crate::x`, or `x` inside a `use crate::{…}`).
fn server_module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = workspace().join("crates/vigil-server/src");
    let mut modules = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if name != "lib" && (path.is_dir() || path.extension().is_some_and(|e| e == "rs")) {
            modules.insert(name, std::collections::BTreeSet::new());
        }
    }
    let names: Vec<String> = modules.keys().cloned().collect();
    for name in &names {
        let mut files = Vec::new();
        let file = src.join(format!("{name}.rs"));
        if file.is_file() {
            files.push(file);
        }
        if src.join(name).is_dir() {
            rust_files(&src.join(name), &mut files);
        }
        let mut uses = std::collections::BTreeSet::new();
        for file in files {
            // Code only: a doc link is no dependency.
            let text: String = std::fs::read_to_string(&file)
                .unwrap()
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let mut rest = text.as_str();
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let named: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    group
                        .split(',')
                        .map(|item| item.trim().split("::").next().unwrap_or("").trim())
                        .collect()
                } else {
                    let end = rest
                        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len());
                    vec![&rest[..end]]
                };
                for other in named {
                    if other != name && modules.contains_key(other) {
                        uses.insert(other.to_string());
                    }
                }
            }
        }
        modules.insert(name.clone(), uses);
    }
    modules
}

/// **The server's modules import each other without a loop**: state types (the registry,
/// the detector's wheel, the event log, the doctor) never know `App`; the loops that drive
/// them live in `tasks/`, above it.
#[test]
fn the_server_modules_import_no_loop() {
    let graph = server_module_graph();
    assert!(graph.contains_key("app") && graph.contains_key("tasks"));
    // Depth-first search; a module met again while on the path closes a loop.
    fn visit(
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        module: &str,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
        loops: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_string());
            loops.push(cycle.join(" -> "));
            return;
        }
        if !done.insert(module.to_string()) {
            return;
        }
        path.push(module.to_string());
        for next in &graph[module] {
            visit(graph, next, path, done, loops);
        }
        path.pop();
    }
    let mut loops = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    for module in graph.keys() {
        visit(&graph, module, &mut Vec::new(), &mut done, &mut loops);
    }
    assert!(
        loops.is_empty(),
        "import loops between the server's modules:\n{}\n(graph: {graph:#?})",
        loops.join("\n")
    );
}

/// **Handlers never touch the store**: the HTTP front ends go through `App`'s operations.
#[test]
fn handlers_never_touch_the_store() {
    let src = workspace().join("crates/vigil-server/src");
    let mut files = Vec::new();
    rust_files(&src.join("api"), &mut files);
    rust_files(&src.join("cinder"), &mut files);
    let mut offenders = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.contains(".store.") || line.contains(".store\n") || line.trim() == ".store" {
                offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "handlers reaching past App to the store:\n{}",
        offenders.join("\n")
    );
}
