//! Tests of the built `vigil` binary: real processes, real server, real SQLite files.

mod cli;
mod doctor;
mod events;
