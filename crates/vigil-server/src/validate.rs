//! Checks on what clients send, shared by the Vigil API and the Cinder-compatible API so both
//! reject the same things with the same words.

use vigil_proto::{MAX_FIELD_LEN, REPORT_INTERVAL_RANGE};

use crate::error::AppError;

fn invalid(field: &str, message: String) -> AppError {
    AppError::Invalid {
        code: format!("invalid_{field}"),
        message,
    }
}

/// A text field: at most 255 characters, no control characters; `required` also rejects
/// absent and empty values.
pub fn text(field: &str, value: Option<&str>, required: bool) -> Result<(), AppError> {
    let Some(value) = value else {
        return if required {
            Err(invalid(field, format!("{field} is required")))
        } else {
            Ok(())
        };
    };
    if required && value.trim().is_empty() {
        return Err(invalid(field, format!("{field} must not be empty")));
    }
    let len = value.chars().count();
    if len > MAX_FIELD_LEN {
        return Err(invalid(
            field,
            format!("{field} is {len} characters long; at most {MAX_FIELD_LEN} are allowed"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}

/// A declared `report_interval`, seconds.
pub fn report_interval(value: f64) -> Result<(), AppError> {
    if value.is_finite() && REPORT_INTERVAL_RANGE.contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            "report_interval",
            format!(
                "report_interval must be between {} and {} seconds, not {value}",
                REPORT_INTERVAL_RANGE.start(),
                REPORT_INTERVAL_RANGE.end()
            ),
        ))
    }
}

/// A `service_down_time` a service declares: within the server's bounds, and at least twice
/// its `report_interval` (one late beat must not make it down).
pub fn service_down_time(
    value: f64,
    report_interval: f64,
    config: &crate::config::Config,
) -> Result<(), AppError> {
    let low = config.service_down_time_min.max(2.0 * report_interval);
    let high = config.service_down_time_max;
    if value.is_finite() && (low..=high).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            "service_down_time",
            format!(
                "service_down_time must be between {low} and {high} seconds (the server's \
                 bounds, and at least twice report_interval {report_interval} s), not {value}"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(result: Result<(), AppError>) -> String {
        match result {
            Err(AppError::Invalid { code, .. }) => code,
            other => panic!("expected an invalid error, got {other:?}"),
        }
    }

    #[test]
    fn text_rules() {
        assert!(text("host", Some("node-1"), true).is_ok());
        assert!(text("topic", None, false).is_ok());
        assert_eq!(code(text("host", None, true)), "invalid_host");
        assert_eq!(code(text("host", Some(" "), true)), "invalid_host");
        assert_eq!(code(text("binary", Some("a\nb"), true)), "invalid_binary");
        assert_eq!(
            code(text("zone", Some(&"z".repeat(256)), false)),
            "invalid_zone"
        );
        assert!(text("zone", Some(&"é".repeat(255)), false).is_ok());
    }

    #[test]
    fn interval_rules() {
        assert!(report_interval(0.1).is_ok());
        assert!(report_interval(3600.0).is_ok());
        assert!(report_interval(0.05).is_err());
        assert!(report_interval(f64::NAN).is_err());
    }
}
