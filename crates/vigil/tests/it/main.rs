//! Tests of the built `vigil` binary: real processes, real server, real SQLite files.

mod bench;
mod cli;
mod doctor;
