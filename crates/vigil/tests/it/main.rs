//! Tests of the built `vigil` binary: real processes, real server, real databases.

/// The agent token (any host) every test server is started with (`--agent-token`), sent with
/// the tests' own registrations and heartbeats and given to `vigil agent` as
/// `VIGIL_AGENT_TOKEN`.
pub(crate) const AGENT_TOKEN: &str = "cli-test-agent-token";

mod bench;
mod cli;
mod doctor;
mod events;
mod failover;
mod faults;
mod logs;
mod maintenance;
mod openapi;
mod packaging;
mod partition;
mod rough_edges;
