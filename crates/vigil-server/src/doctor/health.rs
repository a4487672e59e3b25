//! What the service says of its own health, beside liveness: alive but failing is not dead.

use super::*;

/// The health its heartbeats last reported: `ok`, `warning` or `failing` (with its message),
/// or none reported.
pub(super) fn health(inputs: &Inputs) -> Finding {
    let record = inputs.record;
    let message = record
        .health_message()
        .map_or_else(String::new, |m| format!(": {m}"));
    match record.health {
        None => ok(
            "health",
            "not reported (its reporter sends no health with its heartbeats)",
        ),
        Some(Health::Ok) => ok("health", format!("reports ok{message}")),
        Some(Health::Warning) => warning("health", format!("reports warning{message}"))
            .because(
                "its heartbeats arrive, so it is alive; the service itself says it works \
                 degraded",
            )
            .fix(format!(
                "look at the service on {} for what its message describes",
                record.host
            )),
        Some(Health::Failing) => error("health", format!("alive but failing{message}"))
            .because(
                "its heartbeats arrive, so it is not dead (its state follows its heartbeats); \
                 the service itself says it cannot do its work",
            )
            .fix(format!(
                "look at the service on {} (its log, its dependencies) for what its message \
                 describes; consider disabling it so it gets no work meanwhile: vigil service \
                 disable {} {} --reason ...",
                record.host, record.host, record.binary
            )),
    }
}
