//! A background loop that retries says once that it fails and once that it works again, not
//! at every attempt, so that an outage is two log lines however long it lasts.

use std::fmt::Display;

pub struct Trouble {
    /// What failing means, e.g. "cannot read other replicas' changes".
    failed: &'static str,
    /// What recovering means, e.g. "reading other replicas' changes again".
    recovered: &'static str,
    failing: bool,
}

impl Trouble {
    pub fn new(failed: &'static str, recovered: &'static str) -> Trouble {
        Trouble {
            failed,
            recovered,
            failing: false,
        }
    }

    /// Logs `result` when it changes the loop's state.
    pub fn report<E: Display>(&mut self, result: Result<(), E>) {
        match result {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!("{}", self.recovered);
            }
            Err(err) if !self.failing => {
                self.failing = true;
                tracing::warn!(error = %err, "{}", self.failed);
            }
            _ => {}
        }
    }
}
