//! Instructions a heartbeat costs the server, counted by callgrind rather than timed, so that a
//! change to the request path can be judged without this machine's noise (issue #18).
//!
//! ```sh
//! cargo install gungraun-runner --version 0.20.0   # once; the same version as the crate
//! cargo bench -p vigil-server --features bench --bench hot_path
//! ```
//!
//! Each benchmark builds a server of [`SERVICES`] services in its setup (not counted: see
//! `vigil_server::hot_path`), then counts one request through the router: a single heartbeat,
//! the bare endpoint it is compared with, the reference endpoint (Vigil's middleware
//! and extractors, no registry), and batches of 1, 10 and 100 beats. Divide a batch's
//! count by its beats for the cost of one beat; BENCHMARKS.md has the figures.

use std::hint::black_box;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use gungraun::{library_benchmark, library_benchmark_group, main};
use vigil_server::hot_path::{self, HotPath};

/// Services the server holds: enough that a beat's entry is not always in the cache.
const SERVICES: usize = 10_000;

fn single(id: i64) -> (HotPath, Request<Body>) {
    (HotPath::new(SERVICES), hot_path::single_request(id))
}

fn bare(id: i64) -> (HotPath, Request<Body>) {
    (HotPath::new(SERVICES), hot_path::bare_request(id))
}

fn reference(id: i64) -> (HotPath, Request<Body>) {
    (HotPath::new(SERVICES), hot_path::reference_request(id))
}

fn batch(beats: i64) -> (HotPath, Request<Body>) {
    let ids: Vec<i64> = (1..=beats).map(|i| i * 97 % SERVICES as i64 + 1).collect();
    (HotPath::new(SERVICES), hot_path::batch_request(&ids))
}

// One request answered; the server is handed back so that its teardown is not counted.
#[library_benchmark]
#[bench::single_heartbeat(args = (4242), setup = single)]
#[bench::bare_endpoint(args = (4242), setup = bare)]
#[bench::reference_endpoint(args = (4242), setup = reference)]
#[bench::batch_of_1(args = (1), setup = batch)]
#[bench::batch_of_10(args = (10), setup = batch)]
#[bench::batch_of_100(args = (100), setup = batch)]
fn request((hot, request): (HotPath, Request<Body>)) -> (HotPath, StatusCode) {
    let status = hot.send(black_box(request));
    assert_eq!(status, StatusCode::OK);
    (hot, status)
}

library_benchmark_group!(name = heartbeats; benchmarks = request);

main!(library_benchmark_groups = heartbeats);
