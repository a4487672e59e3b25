//! One module per subcommand, each with its args struct and `run()`.

pub mod agent;
pub mod bench;
pub mod completions;
pub mod config;
pub mod confirm_down;
pub mod demo;
pub mod doctor;
pub mod events;
pub mod maintenance;
pub mod server;
pub mod service;
pub mod token;
pub mod watch;
