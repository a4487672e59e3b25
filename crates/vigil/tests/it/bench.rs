//! `vigil bench` runs every scenario end to end and prints its table (tiny sizes: timings are
//! never asserted).

use std::process::Command;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

#[test]
fn bench_runs_every_scenario_and_prints_a_table() {
    let output = Command::new(VIGIL)
        .args([
            "bench",
            "--services",
            "200",
            "--connections",
            "2",
            "--duration",
            "0.2",
            "--batch-sizes",
            "1,10",
        ])
        .args([
            "--list-sizes",
            "100",
            "--list-runs",
            "2",
            "--host-runs",
            "10",
        ])
        .args([
            "--fleet",
            "400",
            "--victims",
            "4",
            "--report-interval",
            "0.5",
            "--fleet-batch",
            "10",
        ])
        .args(["--cinder-services", "100", "--cinder-runs", "2"])
        .args(["--service-down-time", "1.5", "--flush-interval", "0.2"])
        .env_remove("VIGIL_LOG")
        .output()
        .expect("run vigil bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("| scenario | measure | result | target | met |"),
        "{stdout}"
    );
    for scenario in [
        "ingest (",
        "batch (1 beats per request",
        "batch (10 beats per request",
        "protocol (1 beats per request",
        "protocol (100 beats per request",
        "list (",
        "cinder (100 services) | GET /v3/os-services",
        "fleet (",
        "detection (",
        "memory (",
        "restart (",
    ] {
        assert!(stdout.contains(scenario), "no {scenario} rows in\n{stdout}");
    }
    // Every request of every phase was answered 200 with each of its beats applied, and the
    // protocol scenario's answers came over the protocol asked for.
    assert!(!stdout.contains("failed"), "{stdout}");
    assert!(
        stdout.contains("4 of 4; 0"),
        "every victim, and only they, went down:\n{stdout}"
    );
}
