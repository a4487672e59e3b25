//! The systemd notification protocol for `vigil server` under a `Type=notify` unit.
//!
//! `READY=1` is sent once the server's own `/readyz` answers 200 over its listener (so the
//! database is open and requests are served, not merely a socket bound), and, when the unit
//! sets `WatchdogSec=` (systemd then passes `WATCHDOG_USEC`), `WATCHDOG=1` every half of that,
//! each time only after `/healthz` answered: a server whose HTTP side has hung stops feeding the
//! watchdog and is restarted. `/healthz` rather than `/readyz` because an unreachable database
//! is not fixed by a restart (a replica keeps taking heartbeats meanwhile). Outside systemd
//! (`NOTIFY_SOCKET` unset) nothing is sent and nothing runs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use sd_notify::NotifyState;

/// How often readiness is probed while the server starts.
const READY_PROBE: Duration = Duration::from_millis(100);

/// Whether a service manager listens for notifications.
fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// The address to probe the server on: a wildcard listen address is probed on loopback.
fn probe_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

fn send(state: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(state) {
        tracing::warn!("cannot notify the service manager: {err}");
    }
}

/// Runs for the server's lifetime next to it: `READY=1` once ready, then the watchdog.
pub async fn supervise(listen: SocketAddr) {
    if !enabled() {
        return;
    }
    let base = format!("http://{}", probe_addr(listen));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .unwrap_or_default();
    let answers_200 = |path: &'static str| {
        let request = http.get(format!("{base}{path}"));
        async move {
            request
                .send()
                .await
                .is_ok_and(|response| response.status().is_success())
        }
    };
    while !answers_200("/readyz").await {
        tokio::time::sleep(READY_PROBE).await;
    }
    let status = format!("serving on {listen}");
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    tracing::info!("notified the service manager: ready");
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = timeout / 2;
    tracing::info!(
        watchdog_s = timeout.as_secs_f64(),
        "feeding the service manager's watchdog"
    );
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if tokio::time::timeout(period, answers_200("/healthz"))
            .await
            .unwrap_or(false)
        {
            send(&[NotifyState::Watchdog]);
        } else {
            tracing::warn!("/healthz did not answer: not feeding the watchdog");
        }
    }
}

/// Tells the service manager the server is shutting down (draining, final flush).
pub fn stopping() {
    if enabled() {
        send(&[NotifyState::Stopping]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_address_is_probed_on_loopback() {
        let probe = |s: &str| probe_addr(s.parse().unwrap()).to_string();
        assert_eq!(probe("0.0.0.0:8799"), "127.0.0.1:8799");
        assert_eq!(probe("[::]:8799"), "[::1]:8799");
        assert_eq!(probe("10.1.2.3:80"), "10.1.2.3:80");
    }
}
