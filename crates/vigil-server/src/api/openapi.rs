//! `GET /openapi.json`: the OpenAPI 3.1 document of this API, generated from the handlers'
//! `#[utoipa::path]` attributes and the wire types of `vigil_proto`.
//!
//! What every route can answer besides its own codes (the listener's 400/414/431, a NUL in
//! the URI, `internal`) is added to each operation here, once, rather than on each handler. The
//! document is built when the router is, for this server's `auth.anonymous_read`: with it off,
//! reads need the admin token, and the document says so.

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response as OaResponse, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

/// Name of the admin token's security scheme.
pub(crate) const ADMIN_TOKEN: &str = "admin_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Vigil",
        description = "Service-liveness registry: services register by (host, binary), heartbeat \
every report_interval, and are up while the server-clock age of their newest heartbeat is at \
most service_down_time.\n\nEvery error is `{\"error\": {\"code\": \"<stable_snake_case>\", \
\"message\": \"<for people>\"}}`. Admin calls (PATCH, DELETE) need `Authorization: Bearer \
<admin token>`: 401 `unauthorized` without one, 403 `forbidden` with a wrong one. Reads need no \
token unless the server runs with `auth.anonymous_read = false`; this document is generated \
by the server that serves it and shows which. Registrations and heartbeats need none.",
        license(name = "Apache-2.0"),
    ),
    paths(
        super::services::register,
        super::services::list,
        super::services::show,
        super::services::update,
        super::services::delete,
        super::services::heartbeat,
        super::services::heartbeat_batch,
        super::stop::stop,
        super::events::for_service,
        super::events::list,
        super::events::stream,
        super::doctor::diagnosis,
        super::healthz,
        super::readyz,
        super::metrics::handler,
        document,
    ),
    components(schemas(SseEvent)),
    modifiers(&Common),
    tags(
        (name = "services", description = "Registration, heartbeats and administration of services"),
        (name = "events", description = "The history of what happened to services"),
        (name = "health", description = "Probes of the server itself"),
    )
)]
struct ApiDoc;

/// One Server-Sent Event of `GET /v1/events/stream`: `id` is the event's id (send it back as
/// `Last-Event-ID` to resume), `event` its kind, `data` the event as JSON.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct SseEvent {
    #[schema(example = "17")]
    id: String,
    #[schema(example = "down")]
    event: String,
    /// A `vigil_proto::Event`, as JSON (schema `Event`).
    #[schema(
        example = r#"{"id":17,"service_id":1,"host":"node-1","binary":"cinder-volume","kind":"down","at":"2026-11-25T11:08:01.004211Z","reason":null,"last_seen":"2026-11-25T11:07:00.120000Z","threshold_s":60.0}"#
    )]
    data: String,
}

/// The answers every operation may give, whatever its route.
struct Common;

fn error_response(description: &str, code: &str, message: &str) -> OaResponse {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .example(Some(json!({"error": {"code": code, "message": message}})))
                .build(),
        )
        .build()
}

/// Operations of every path, with their method.
fn operations(doc: &mut utoipa::openapi::OpenApi) -> Vec<(String, &'static str, &mut Operation)> {
    let mut all = Vec::new();
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, operation) in [
            ("get", item.get.as_mut()),
            ("post", item.post.as_mut()),
            ("put", item.put.as_mut()),
            ("patch", item.patch.as_mut()),
            ("delete", item.delete.as_mut()),
            ("head", item.head.as_mut()),
            ("options", item.options.as_mut()),
            ("trace", item.trace.as_mut()),
        ] {
            if let Some(operation) = operation {
                all.push((path.clone(), method, operation));
            }
        }
    }
    all
}

impl Modify for Common {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            ADMIN_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token: `admin_token` in the configuration, or the one the \
                         server generated in `<data_dir>/admin.token`",
                    ))
                    .build(),
            ),
        );
        let common = [
            (
                "InvalidRequest",
                error_response(
                    "`invalid_http`: the HTTP layer could not parse the request; \
                     `invalid_query`: the URI holds a NUL (`%00`) or a malformed query",
                    "invalid_query",
                    "the request URI contains a NUL character (%00), which no field may hold",
                ),
            ),
            (
                "UriTooLong",
                error_response(
                    "`uri_too_long`: the request URI is longer than the server takes",
                    "uri_too_long",
                    "the request URI is too long",
                ),
            ),
            (
                "HeadersTooLarge",
                error_response(
                    "`headers_too_large`: the request headers are larger than the server takes",
                    "headers_too_large",
                    "the request headers are too large",
                ),
            ),
            (
                "Internal",
                error_response(
                    "`internal`: a bug, logged with its cause; never the answer to a user mistake",
                    "internal",
                    "internal error; see the server log",
                ),
            ),
        ];
        // A batch checks each beat's values on its own: a bad `zone` or `sent_at` fails only its
        // beat, answered in its result with the single heartbeat's code, never the request. The
        // document says so by leaving the values of a beat unconstrained here; the single
        // heartbeat's schema keeps its constraints.
        components.schemas.insert(
            "BatchBeat".into(),
            serde_json::from_value(loose_batch_beat()).expect("a valid schema"),
        );
        for (name, response) in &common {
            components
                .responses
                .insert((*name).into(), RefOr::T(response.clone()));
        }
        for (_, _, operation) in operations(doc) {
            // An optional header is absent, never `null`: utoipa makes an `Option` nullable.
            for parameter in operation.parameters.iter_mut().flatten() {
                if parameter.name == "Last-Event-ID" {
                    parameter.schema = Some(RefOr::T(
                        utoipa::openapi::ObjectBuilder::new()
                            .schema_type(utoipa::openapi::schema::Type::Integer)
                            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                                utoipa::openapi::KnownFormat::Int64,
                            )))
                            .into(),
                    ));
                }
            }
            // A change names at least one field (else 400 `empty_change`).
            if operation.operation_id.as_deref() == Some("update_service") {
                if let Some(body) = operation.request_body.as_mut() {
                    for content in body.content.values_mut() {
                        if let Some(RefOr::Ref(_)) = &content.schema {
                            let at_least_one = utoipa::openapi::AllOfBuilder::new()
                                .item(content.schema.clone().unwrap_or_default())
                                .item(utoipa::openapi::ObjectBuilder::new().min_properties(Some(1)))
                                .build();
                            content.schema = Some(RefOr::T(at_least_one.into()));
                        }
                    }
                }
            }
            // A heartbeat's body may be empty (read as `{}`); utoipa marks every body required.
            if operation.operation_id.as_deref() == Some("heartbeat") {
                if let Some(body) = operation.request_body.as_mut() {
                    body.required = Some(utoipa::openapi::Required::False);
                }
            }
            let responses = &mut operation.responses.responses;
            match responses.get_mut("400") {
                // The route's own codes, and those of the listener and the NUL check.
                Some(RefOr::T(own)) => own.description.push_str(
                    "; `invalid_http` (a request the HTTP layer cannot parse), `invalid_query` \
                     (a NUL, `%00`, in the URI)",
                ),
                Some(RefOr::Ref(_)) => {}
                None => {
                    responses.insert(
                        "400".into(),
                        RefOr::Ref(Ref::from_response_name("InvalidRequest")),
                    );
                }
            }
            responses.insert(
                "414".into(),
                RefOr::Ref(Ref::from_response_name("UriTooLong")),
            );
            responses.insert(
                "431".into(),
                RefOr::Ref(Ref::from_response_name("HeadersTooLarge")),
            );
            responses.insert(
                "500".into(),
                RefOr::Ref(Ref::from_response_name("Internal")),
            );
        }
    }
}

/// The schema of one beat of a batch: an `id` and the fields of a single heartbeat, whose
/// values are checked per beat (see `POST /v1/heartbeats`).
fn loose_batch_beat() -> serde_json::Value {
    let text = json!({"type": ["string", "null"]});
    let number = json!({"type": ["number", "null"]});
    json!({
        "type": "object",
        "description": "One service's beat: its `id` and the fields of a single heartbeat. \
            Each beat's values are checked on their own: a bad one fails only that beat, \
            answered in its result with the code the single heartbeat would give \
            (`invalid_zone`, `invalid_sent_at`, `invalid_message`, ...).",
        "required": ["id"],
        "properties": {
            "id": {"type": "integer", "format": "int64"},
            "zone": text,
            "sent_at": text,
            "last_rtt_s": number,
            "overrun_s": number,
            "last_error": text,
            "health": {"type": ["string", "null"], "enum": ["ok", "warning", "failing", null]},
            "message": text,
        },
    })
}

/// The document for a server whose reads need the admin token (`anonymous_read` false) or not.
pub(crate) fn document_for(anonymous_read: bool) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    if !anonymous_read {
        for (path, method, operation) in operations(&mut doc) {
            let probe = matches!(path.as_str(), "/healthz" | "/readyz" | "/openapi.json");
            if method == "get" && !probe {
                operation.security = Some(vec![SecurityRequirement::new(
                    ADMIN_TOKEN,
                    Vec::<String>::new(),
                )]);
            }
        }
    }
    doc
}

/// The document, serialized once when the router is built.
#[derive(Clone)]
pub(crate) struct Document(pub(crate) axum::body::Bytes);

impl Document {
    pub(crate) fn new(anonymous_read: bool) -> Document {
        // Serializing a document built from our own types cannot fail; if it ever did, the
        // route answers an empty object rather than stopping the server.
        let text = serde_json::to_vec(&document_for(anonymous_read)).unwrap_or_else(|err| {
            tracing::error!(%err, "could not serialize the OpenAPI document");
            b"{}".to_vec()
        });
        Document(text.into())
    }
}

/// The OpenAPI 3.1 document of this API (this one included). Needs no token: it describes
/// the API and holds no data.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    operation_id = "openapi",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object),
    )
)]
pub(crate) async fn document(doc: Document) -> Response {
    ([(CONTENT_TYPE, "application/json")], doc.0).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Routes mounted only by `vigil bench` (the hidden `--bench-reference` flag), never by a
    /// deployed server: not part of the API.
    const UNDOCUMENTED: &[&str] = &["/v1/bench/reference/{id}/heartbeat"];

    const METHODS: [&str; 8] = [
        "get", "post", "put", "patch", "delete", "head", "options", "trace",
    ];

    /// (path, method) of every `.route(` call in `api/mod.rs`'s source.
    fn routes_in_source() -> BTreeSet<(String, String)> {
        let source = include_str!("mod.rs");
        let body = &source[source
            .find("pub fn router(")
            .expect("fn router in api/mod.rs")..];
        let mut routes = BTreeSet::new();
        let mut rest = &body[..body.find("\n}\n").expect("the end of fn router")];
        while let Some(start) = rest.find(".route(") {
            rest = &rest[start + ".route(".len()..];
            // The call's arguments: up to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map(|(i, _)| i)
                .expect("a closed .route( call");
            let call = &rest[..end];
            let path = call
                .split('"')
                .nth(1)
                .expect("a .route( call starts with its path literal");
            let mut found = 0;
            for method in METHODS {
                let needle = format!("{method}(");
                for (at, _) in call.match_indices(&needle) {
                    let before = call[..at].chars().next_back();
                    if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                        routes.insert((path.to_owned(), method.to_owned()));
                        found += 1;
                    }
                }
            }
            assert!(found > 0, "no method found in .route({call})");
        }
        routes
    }

    fn routes_in_document(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
        let mut routes = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if METHODS.contains(&method.as_str()) {
                    routes.insert((path.clone(), method.clone()));
                }
            }
        }
        routes
    }

    #[test]
    fn the_document_has_every_route_of_the_router_and_no_other() {
        let doc = serde_json::to_value(document_for(true)).unwrap();
        let mut source = routes_in_source();
        assert!(source.len() >= 14, "the parser lost routes: {source:?}");
        source.retain(|(path, _)| !UNDOCUMENTED.contains(&path.as_str()));
        let documented = routes_in_document(&doc);
        let missing: Vec<_> = source.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&source).collect();
        assert!(
            missing.is_empty(),
            "routes of api/mod.rs missing from the OpenAPI document (add #[utoipa::path] to \
             the handler and list it in api/openapi.rs): {missing:?}"
        );
        assert!(
            extra.is_empty(),
            "operations of the OpenAPI document that api/mod.rs does not route: {extra:?}"
        );
    }

    #[test]
    fn every_operation_documents_its_errors_and_auth() {
        let doc = serde_json::to_value(document_for(true)).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                for status in ["400", "414", "431", "500"] {
                    assert!(responses.contains_key(status), "{method} {path}: {status}");
                }
                assert!(op.get("security").is_some(), "{method} {path}: no security");
                let admin = op["security"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s.get(ADMIN_TOKEN).is_some());
                let anonymous = op["security"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s.as_object().unwrap().is_empty());
                match method.as_str() {
                    "patch" | "delete" => {
                        assert!(admin && !anonymous, "{method} {path}");
                        assert!(responses.contains_key("401") && responses.contains_key("403"));
                    }
                    // Reads, and the metrics (which `metrics.require_token` protects).
                    "get" if path.starts_with("/v1/") || path == "/metrics" => {
                        assert!(admin && anonymous, "{method} {path}");
                        assert!(responses.contains_key("401") && responses.contains_key("403"));
                    }
                    _ => assert!(!admin && anonymous, "{method} {path}"),
                }
            }
        }
        let beat = &doc["paths"]["/v1/services/{id}/heartbeat"]["post"]["requestBody"];
        assert_eq!(beat["required"], false, "an empty body is a beat: {beat}");
        assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
        assert!(doc["components"]["schemas"]["Service"]["example"].is_object());
    }

    #[test]
    fn without_anonymous_reads_every_read_needs_the_token() {
        let doc = serde_json::to_value(document_for(false)).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            if let Some(op) = item.get("get") {
                let open = ["/healthz", "/readyz", "/openapi.json"].contains(&path.as_str());
                let expected = if open {
                    json!([{}])
                } else {
                    json!([{ADMIN_TOKEN: []}])
                };
                assert_eq!(op["security"], expected, "{path}");
            }
        }
    }
}
