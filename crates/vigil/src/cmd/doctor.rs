//! `vigil doctor [HOST [BINARY]]`: why is a service down (or about to be)?
//!
//! Asks the server's doctor (`GET /v1/services/{id}/diagnosis`) about one service, the services
//! of one host, or every service, and prints the findings grouped per service, worst first.
//! Without a host only services with something above `ok` are shown, worst first, so the answer
//! on a healthy fleet is one line. Exit code 0 when everything is ok, 1 when anything is not, so it can gate a
//! deploy or a monitoring check.

use std::fmt::Write as _;
use std::io::IsTerminal;

use futures_util::{StreamExt, TryStreamExt};
use vigil_proto::{Diagnosis, Finding, Severity};

use crate::client::{CliError, ServerOpts, EXIT_REFUSED};

/// Diagnoses asked for at once: enough to make a large fleet quick, few enough to be gentle.
const CONCURRENT_REQUESTS: usize = 8;

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub server: ServerOpts,
    /// Only the services of this host, every finding shown [default: every service that has a
    /// finding above ok].
    pub host: Option<String>,
    /// Only this service of HOST.
    pub binary: Option<String>,
    /// Print the diagnoses shown as a JSON array instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: DoctorArgs) -> Result<i32, CliError> {
    let client = args.server.client()?;
    let services = match (&args.host, &args.binary) {
        (Some(host), Some(binary)) => vec![client.find(host, binary).await?],
        (Some(host), None) => {
            let services = client.list(&[("host", host.clone())]).await?;
            if services.is_empty() {
                return Err(CliError::refused(format!("no service on host {host}")));
            }
            services
        }
        _ => client.list(&[]).await?,
    };
    let total = services.len();
    let client = &client;
    let diagnoses: Vec<Diagnosis> = futures_util::stream::iter(services)
        .map(|service| async move {
            client
                .get::<Diagnosis>(&format!("/v1/services/{}/diagnosis", service.id), &[])
                .await
        })
        .buffered(CONCURRENT_REQUESTS)
        .try_collect()
        .await?;
    let all_ok = diagnoses.iter().all(|d| worst(d) == Severity::Ok);
    let mut shown: Vec<&Diagnosis> = if args.host.is_some() {
        diagnoses.iter().collect()
    } else {
        diagnoses
            .iter()
            .filter(|d| worst(d) > Severity::Ok)
            .collect()
    };
    shown.sort_by_key(|d| std::cmp::Reverse(worst(d)));
    if args.json {
        match serde_json::to_string_pretty(&shown) {
            Ok(text) => println!("{text}"),
            Err(err) => eprintln!("vigil: cannot print JSON: {err}"),
        }
    } else {
        let style = Style {
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        };
        print!("{}", render(&shown, args.host.is_some(), total, style));
    }
    Ok(if all_ok { 0 } else { EXIT_REFUSED })
}

/// The worst severity among a diagnosis's findings.
fn worst(diagnosis: &Diagnosis) -> Severity {
    diagnosis
        .findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Severity::Ok)
}

/// ANSI colours on a terminal, plain text when piped.
#[derive(Debug, Clone, Copy)]
struct Style {
    colour: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn severity(self, severity: Severity) -> String {
        let code = match severity {
            Severity::Ok => "32",
            Severity::Warning => "33",
            Severity::Error => "1;31",
        };
        // Padded before painting, so escape codes do not upset the alignment.
        self.paint(code, &format!("{:<8}", severity.as_str()))
    }
}

/// The text report. `every_finding` shows `ok` findings too (a host or a service was named);
/// otherwise only what needs attention, with a count of what was fine.
fn render(diagnoses: &[&Diagnosis], every_finding: bool, total: usize, style: Style) -> String {
    let mut out = String::new();
    if diagnoses.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            match total {
                0 => "no services registered".to_string(),
                1 => "the one service is ok".to_string(),
                n => format!("all {n} services ok"),
            }
        );
        return out;
    }
    for (i, diagnosis) in diagnoses.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let service = &diagnosis.service;
        let header = format!(
            "{} on {} (id {}): {}, {}",
            service.binary,
            service.host,
            service.id,
            service.state.as_str(),
            service.status.as_str()
        );
        let _ = writeln!(out, "{}", style.paint("1", &header));
        let mut findings: Vec<&Finding> = diagnosis
            .findings
            .iter()
            .filter(|f| every_finding || f.severity > Severity::Ok)
            .collect();
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        let width = diagnosis
            .findings
            .iter()
            .map(|f| f.check.len())
            .max()
            .unwrap_or(0);
        let indent = " ".repeat(2 + 8 + 1 + width + 2);
        for finding in &findings {
            let _ = writeln!(
                out,
                "  {} {:<width$}  {}",
                style.severity(finding.severity),
                finding.check,
                finding.summary
            );
            if finding.severity > Severity::Ok {
                if !finding.detail.is_empty() {
                    let _ = writeln!(out, "{indent}{}", style.paint("2", &finding.detail));
                }
                if !finding.remedy.is_empty() {
                    let _ = writeln!(out, "{indent}remedy: {}", finding.remedy);
                }
            }
        }
        let hidden = diagnosis.findings.len() - findings.len();
        match hidden {
            0 => {}
            1 => out.push_str("  1 other check ok\n"),
            n => {
                let _ = writeln!(out, "  {n} other checks ok");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diagnosis() -> Diagnosis {
        let service: vigil_proto::Service = serde_json::from_value(serde_json::json!({
            "id": 3, "host": "node-1", "binary": "cinder-volume", "topic": null, "zone": "nova",
            "disabled": false, "disabled_reason": null, "report_count": 9,
            "report_interval": 10.0, "version": null,
            "created_at": "2026-01-02T03:04:05Z", "updated_at": null, "modified_at": null,
            "state": "down", "status": "enabled", "last_heartbeat_age_s": 73.0
        }))
        .unwrap();
        let finding = |check: &str, severity, summary: &str| Finding {
            check: check.into(),
            severity,
            summary: summary.into(),
            detail: if severity == Severity::Ok {
                String::new()
            } else {
                "why".into()
            },
            remedy: if severity == Severity::Ok {
                String::new()
            } else {
                "fix".into()
            },
        };
        Diagnosis {
            service,
            findings: vec![
                finding("interval", Severity::Ok, "fits"),
                finding("heartbeat", Severity::Error, "no heartbeat for 73 s"),
            ],
        }
    }

    #[test]
    fn plain_report_puts_the_worst_first_and_hides_ok_for_the_fleet() {
        let d = diagnosis();
        let plain = Style { colour: false };
        assert_eq!(
            render(&[&d], false, 5, plain),
            "cinder-volume on node-1 (id 3): down, enabled\n\
             \x20 error    heartbeat  no heartbeat for 73 s\n\
             \x20                     why\n\
             \x20                     remedy: fix\n\
             \x20 1 other check ok\n"
        );
        assert!(render(&[&d], true, 1, plain).contains("  ok       interval   fits\n"));
        assert_eq!(render(&[], false, 5, plain), "all 5 services ok\n");
    }

    #[test]
    fn colour_only_when_asked() {
        let d = diagnosis();
        assert!(
            render(&[&d], true, 1, Style { colour: true }).contains("\x1b[1;31merror   \x1b[0m")
        );
    }
}
