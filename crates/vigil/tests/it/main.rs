//! Tests of the built `vigil` binary: real processes, real server, real databases.

mod bench;
mod cli;
mod doctor;
mod events;
mod failover;
mod faults;
mod logs;
mod openapi;
mod packaging;
mod rough_edges;
