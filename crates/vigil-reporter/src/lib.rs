//! Heartbeat reporter that services embed to tell a Vigil server they are alive.
//!
//! # Layout
//! - [`looping`]: [`FixedIntervalLoop`], the fixed-interval loop that drives the heartbeats.
//! - [`clock`]: [`Clock`], the wall clock that stamps `sent_at`.

pub mod clock;
pub mod looping;

pub use clock::{Clock, OffsetClock, SystemClock};
pub use looping::{FixedIntervalLoop, LoopHandle, Tick};
