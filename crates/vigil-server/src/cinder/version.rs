//! Version discovery and microversions.
//!
//! cinderclient 9.10 finds the server's range by `GET` on the endpoint cut before `/v3`
//! (`/` for `http://host:port/v3/<project>`) and reads `versions[*].version` and
//! `min_version` of the entry whose `version` contains `3.`; other clients (openstacksdk,
//! keystoneauth discovery) fetch `/v3` or `/v3/`. All three answer the same document.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{HeaderName, HeaderValue, HOST, VARY};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::fault::Fault;
use crate::app::App;

/// Lowest and highest `3.X` served (Cinder 2023.2 and later: 3.0 to 3.71).
pub const MIN_MINOR: u32 = 0;
pub const MAX_MINOR: u32 = 71;

/// When the newest microversion appeared in Cinder, as its discovery document says.
const UPDATED: &str = "2023-08-31T00:00:00Z";

static API_VERSION: HeaderName = HeaderName::from_static("openstack-api-version");

/// The microversion a request asked for (`3.minor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Microversion {
    pub minor: u32,
}

impl Microversion {
    /// True from `3.minor` on.
    pub fn at_least(self, minor: u32) -> bool {
        self.minor >= minor
    }

    /// Reads `OpenStack-API-Version: volume 3.X` (other services' entries are ignored;
    /// absent means 3.0, `latest` the newest), answering as Cinder does: 400 for a malformed
    /// version, 406 for one outside the served range.
    pub fn from_headers(headers: &HeaderMap) -> Result<Microversion, Fault> {
        let requested = headers
            .get_all(&API_VERSION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .find_map(|item| {
                let mut words = item.split_whitespace();
                match (words.next(), words.next()) {
                    (Some(service), Some(version)) if service.eq_ignore_ascii_case("volume") => {
                        Some(version.to_string())
                    }
                    _ => None,
                }
            });
        let Some(requested) = requested else {
            return Ok(Microversion { minor: MIN_MINOR });
        };
        if requested.eq_ignore_ascii_case("latest") {
            return Ok(Microversion { minor: MAX_MINOR });
        }
        let (major, minor) = parse(&requested).ok_or_else(|| {
            Fault::bad_request(format!(
                "API Version String {requested} is of invalid format. Must be of format \
                 MajorNum.MinorNum."
            ))
        })?;
        if major != 3 || !(MIN_MINOR..=MAX_MINOR).contains(&minor) {
            return Err(Fault::new(
                StatusCode::NOT_ACCEPTABLE,
                format!(
                    "Version {requested} is not supported by the API. Minimum is \
                     3.{MIN_MINOR} and maximum is 3.{MAX_MINOR}."
                ),
            ));
        }
        Ok(Microversion { minor })
    }
}

/// `MAJOR.MINOR` with no sign, no leading zeros (except a lone `0` minor), as Cinder's regex.
fn parse(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    let number = |s: &str, zero_ok: bool| -> Option<u32> {
        let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let leading_zero = s.starts_with('0') && (s.len() > 1 || !zero_ok);
        (digits && !leading_zero).then(|| s.parse().ok()).flatten()
    };
    Some((number(major, false)?, number(minor, true)?))
}

/// Middleware for versioned resources: rejects an unsupported version before the handler runs,
/// hands the version to it as an extension, and echoes it on every answer (errors included,
/// as Cinder does) with `Vary` so caches keep versions apart.
pub async fn negotiate(mut request: Request, next: Next) -> Response {
    let version = match Microversion::from_headers(request.headers()) {
        Ok(version) => version,
        Err(fault) => return fault.into_response(),
    };
    request.extensions_mut().insert(version);
    let mut response = next.run(request).await;
    let echo = format!("volume 3.{}", version.minor);
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&echo) {
        headers.insert(API_VERSION.clone(), value);
    }
    headers.append(VARY, HeaderValue::from_static("OpenStack-API-Version"));
    response
}

/// `GET /`: Cinder's root answers 300 Multiple Choices with every version it has.
pub async fn root(State(app): State<Arc<App>>, headers: HeaderMap) -> impl IntoResponse {
    (StatusCode::MULTIPLE_CHOICES, Json(document(&app, &headers)))
}

/// `GET /v3` and `GET /v3/`.
pub async fn v3(State(app): State<Arc<App>>, headers: HeaderMap) -> Json<Value> {
    Json(document(&app, &headers))
}

/// The document; its `self` link names this listener as the client reached it (the `Host`
/// header, as Cinder's `application_url`), else as configured.
fn document(app: &App, headers: &HeaderMap) -> Value {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or(app.config.cinder_api.listen.as_deref())
        .unwrap_or("localhost");
    let base = format!("http://{host}");
    json!({
        "versions": [{
            "id": "v3.0",
            "status": "CURRENT",
            "version": format!("3.{MAX_MINOR}"),
            "min_version": format!("3.{MIN_MINOR}"),
            "updated": UPDATED,
            "links": [
                {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
                {"rel": "self", "href": format!("{base}/v3/")},
            ],
            "media-types": [{
                "base": "application/json",
                "type": "application/vnd.openstack.volume+json;version=3",
            }],
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(value: &str) -> Result<u32, StatusCode> {
        let mut headers = HeaderMap::new();
        headers.insert(API_VERSION.clone(), HeaderValue::from_str(value).unwrap());
        Microversion::from_headers(&headers)
            .map(|v| v.minor)
            .map_err(|f| f.status)
    }

    #[test]
    fn header_forms() {
        assert_eq!(
            Microversion::from_headers(&HeaderMap::new()).unwrap().minor,
            0
        );
        assert_eq!(version("volume 3.49"), Ok(49));
        assert_eq!(version("compute 2.1, Volume 3.7"), Ok(7));
        assert_eq!(version("compute 2.1"), Ok(0));
        assert_eq!(version("volume latest"), Ok(MAX_MINOR));
        assert_eq!(version("volume 3.72"), Err(StatusCode::NOT_ACCEPTABLE));
        assert_eq!(version("volume 2.0"), Err(StatusCode::NOT_ACCEPTABLE));
        assert_eq!(version("volume 3.07"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(version("volume 3"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(version("volume -3.1"), Err(StatusCode::BAD_REQUEST));
    }
}
