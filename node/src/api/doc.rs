//! The API's description, made from its route tables ([`super::routes`]) and from the types of its requests and
//! answers: `GET /openapi.json` (OpenAPI 3.1, whose schemas are JSON Schema 2020-12, as `schemars` derives them
//! from the Rust types the handlers read and answer) and `docs/API.md` (the same routes as a table). Nothing here is
//! written by hand twice: a route, its statuses, its parameters and its types live in the table, its fields and
//! their meaning in the types' doc comments.

use axum::http::Method;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::Route;

/// A type's JSON Schema for a generator: a `$ref` into `components.schemas` (where the generator keeps the type's
/// schema) or, for a simple type, the schema itself.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// [`SchemaFn`] of `T`.
pub fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What a route reads from its body.
#[derive(Clone, Copy)]
pub enum Payload {
    None,
    /// A JSON document of a type.
    Json(SchemaFn),
    /// A JSON document of a type, or nothing (then the type's defaults).
    OptionalJson(SchemaFn),
    /// A signed envelope's bytes (`application/octet-stream`).
    Envelope,
}

/// What a route answers when it succeeds.
#[derive(Clone, Copy)]
pub enum Reply {
    /// A JSON document of a type.
    Json(SchemaFn),
    /// The dashboard's page.
    Html,
    /// Prometheus metrics, OpenMetrics text.
    Metrics,
    /// Server-sent events, each event's `data` a JSON document of a type.
    Events(SchemaFn),
    /// This document.
    OpenApi,
}

/// A JSON body of type `T`.
pub const fn json_body<T: JsonSchema>() -> Payload {
    Payload::Json(schema::<T>)
}

/// A JSON body of type `T`, or an empty body for `T`'s defaults.
pub const fn optional_json_body<T: JsonSchema>() -> Payload {
    Payload::OptionalJson(schema::<T>)
}

/// A JSON answer of type `T`.
pub const fn json<T: JsonSchema>() -> Reply {
    Reply::Json(schema::<T>)
}

/// The form of an id or an account: 64 hex digits.
pub(crate) const HEX_64: &str = "^[0-9a-fA-F]{64}$";

/// The form of a location cell: a geohash of 1 to 12 characters.
pub(crate) const CELL: &str = "^[0-9b-hjkmnp-z]{1,12}$";

/// A path parameter's form.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// 64 hex digits: an id, an account.
    Hex,
    /// A block height (an integer).
    Height,
    /// A location cell (a geohash).
    Cell,
}

/// A path parameter: what it is, and its form.
#[derive(Clone, Copy)]
pub struct Param {
    pub text: &'static str,
    pub form: Form,
}

/// A path parameter of 64 hex digits: an id or an account.
pub const fn hex(text: &'static str) -> Param {
    Param { text, form: Form::Hex }
}

/// A path parameter that is a block height.
pub const fn height(text: &'static str) -> Param {
    Param { text, form: Form::Height }
}

/// A path parameter that is a location cell.
pub const fn cell(text: &'static str) -> Param {
    Param { text, form: Form::Cell }
}

/// Every error the API answers: `{"error": "…"}`, and the id of what it is about when the client may not know it.
#[derive(Debug, serde::Serialize, JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// The id (64 hex digits) of what the error is about, when the client may not know it (409: the entry already
    /// waiting or committed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Why the node's market refused an offer, as a word for programs (402, 403, 409 of `POST /offers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<super::error::Reason>,
}

/// The answers for errors, by status: the name under `components.responses`, and what it means.
const ERRORS: &[(u16, &str, &str)] = &[
    (400, "BadRequest", "The request is malformed; `error` says why"),
    (401, "Unauthorized", "A write without the data directory's token"),
    (
        402,
        "PaymentRequired",
        "The ledger would not settle this offer: its author cannot pay for it (with its other open offers) or post \
         its collateral; `error` says how much it holds and needs, `reason` is `insufficient_funds`",
    ),
    (
        403,
        "Forbidden",
        "This account may not do this now (an override froze its trading, its reputation tier is below the pool's, \
         it would buy beyond an anti-hoarding limit); `error` says why, `reason` names it for an offer",
    ),
    (404, "NotFound", "Not there (yet), or this node has no such part (a meter, a microgrid controller)"),
    (
        409,
        "Conflict",
        "The request conflicts with the current state (already known; the auction of its interval closed; the \
         account cannot pay); `error` says why; an entry already waiting or on the ledger is named by `id`",
    ),
    (
        410,
        "Gone",
        "This node no longer keeps it: a block below the lowest it keeps (`[storage] mode = \"full\"` prunes old \
         blocks); an archive node has it",
    ),
    (413, "TooLarge", "The request body is larger than the API takes"),
    (
        429,
        "TooMany",
        "This account has too many open offers in the pool, or too many entries waiting in the mempool; `error` says \
         how many; `Retry-After` when waiting helps (the author's entries waiting in the mempool)",
    ),
    (
        503,
        "Unavailable",
        "The node has no ledger or market, or it is busy, full or stopping; `Retry-After` when the refusal passes \
         within about a block (a busy ledger or market, a full mempool or barter board)",
    ),
];

/// The statuses of errors that may carry `Retry-After`.
const RETRY_STATUSES: &[u16] = &[429, 503];

/// What the document and docs/API.md say of the API as a whole.
const ABOUT: &str = "The HTTP API of a kos node. It binds 127.0.0.1 by default. Reads are open; writes (every \
    `POST`) need `Authorization: Bearer <token>`, the token being in `<data-dir>/api.token`. Every error is JSON, \
    `{\"error\": \"…\"}` (schema `Error`), with `Retry-After` when the refusal passes within about a block. Amounts \
    are milli-units of a token; energy quantities are Wh; prices are milli-units per kWh (energy) or per 1000 units.";

/// Every error status a route may list: those of [`ERRORS`].
pub fn is_documented_error(status: u16) -> bool {
    ERRORS.iter().any(|(code, _, _)| *code == status)
}

/// The generators of the answers' schemas (as the node writes them) and the requests' (as it reads them: a field
/// with a default is optional), both keeping their types under `components.schemas`.
fn generators() -> (SchemaGenerator, SchemaGenerator) {
    let settings = SchemaSettings::draft2020_12().with(|settings| {
        settings.definitions_path = "/components/schemas".into();
        settings.meta_schema = None;
    });
    (settings.clone().for_serialize().into_generator(), settings.for_deserialize().into_generator())
}

/// The OpenAPI 3.1 document of `routes`.
pub fn openapi(routes: &[&Route]) -> Value {
    let (mut answers, mut requests) = generators();
    let mut paths = Map::new();
    for route in routes {
        let operation = operation(route, &mut answers, &mut requests);
        let item = paths.entry(route.path).or_insert_with(|| json!({}));
        item[route.method.as_str().to_ascii_lowercase()] = operation;
    }
    answers.subschema_for::<ErrorBody>();
    let schemas = merge(answers.take_definitions(true), requests.take_definitions(true));
    let mut responses: Map<String, Value> = ERRORS
        .iter()
        .map(|(status, name, text)| {
            let text = if *status == 413 {
                format!("{text} ({} bytes: one envelope)", super::BODY_BYTES_MAX)
            } else {
                (*text).to_owned()
            };
            (name.to_string(), error_response(*status, &text))
        })
        .collect();
    responses.insert(
        "Failed".to_owned(),
        error_response(
            500,
            "Any route: the request took too long to arrive (408), or the node failed (500: its store or its signer)",
        ),
    );
    json!({
        "openapi": "3.1.0",
        "info": { "title": "kos node API", "version": env!("CARGO_PKG_VERSION"), "description": ABOUT },
        "components": {
            "securitySchemes": {
                "token": { "type": "http", "scheme": "bearer", "description": "The token in <data-dir>/api.token" },
            },
            "responses": responses,
            "schemas": schemas,
        },
        "paths": paths,
    })
}

/// The answers' schemas and the requests': one name is one type, and a type both read and answered has one shape
/// (else the requests' would be lost: [`shapes_that_differ`] names them, and a test holds it empty).
fn merge(answers: Map<String, Value>, requests: Map<String, Value>) -> Map<String, Value> {
    let mut schemas = answers;
    for (name, schema) in requests {
        schemas.entry(name).or_insert(schema);
    }
    schemas
}

/// The names of the types both read and answered whose schemas differ.
pub fn shapes_that_differ(routes: &[&Route]) -> Vec<String> {
    let (mut answers, mut requests) = generators();
    for route in routes {
        operation(route, &mut answers, &mut requests);
    }
    let answers = answers.take_definitions(true);
    requests
        .take_definitions(true)
        .into_iter()
        .filter(|(name, schema)| answers.get(name).is_some_and(|answer| answer != schema))
        .map(|(name, _)| name)
        .collect()
}

fn error_response(status: u16, text: &str) -> Value {
    let mut response = json!({
        "description": text,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
    });
    if RETRY_STATUSES.contains(&status) {
        response["headers"] = json!({
            "Retry-After": {
                "description": "Seconds to wait before sending the same request again; only for a refusal that passes \
                    within about a block (busy, a full mempool or barter board, too many of the author's entries \
                    waiting); never for a stopped node, an unreadable store or a pool full of offers",
                "schema": { "type": "integer" },
            },
        });
    }
    response
}

/// A name for the operation, for generated clients: `GET /blocks/{height}/raw` is `getBlocksByHeightRaw`.
fn operation_id(route: &Route) -> String {
    let mut id = route.method.as_str().to_ascii_lowercase();
    for segment in route.path.split(['/', '-']).filter(|segment| !segment.is_empty()) {
        let (prefix, word) = match segment.strip_prefix('{').and_then(|name| name.strip_suffix('}')) {
            Some(name) => ("By", name),
            None => ("", segment),
        };
        id.push_str(prefix);
        let mut letters = word.chars();
        if let Some(first) = letters.next() {
            id.extend(first.to_uppercase());
            id.push_str(letters.as_str());
        }
    }
    id
}

fn operation(route: &Route, answers: &mut SchemaGenerator, requests: &mut SchemaGenerator) -> Value {
    let write = route.method != Method::GET;
    let mut operation = json!({
        "operationId": operation_id(route),
        "summary": route.summary,
        "tags": [if write { "write" } else { "read" }],
    });
    if write {
        operation["security"] = json!([{ "token": [] }]);
    }
    let mut parameters = path_parameters(route);
    if let Some(query) = route.query {
        parameters.extend(query_parameters(query));
    }
    if !parameters.is_empty() {
        operation["parameters"] = Value::Array(parameters);
    }
    let body = match route.body {
        Payload::None => None,
        Payload::Json(body) => Some((true, "application/json", body(requests).to_value())),
        Payload::OptionalJson(body) => Some((false, "application/json", body(requests).to_value())),
        Payload::Envelope => Some((true, "application/octet-stream", json!({ "type": "string", "format": "binary" }))),
    };
    if let Some((required, media, schema)) = body {
        operation["requestBody"] = json!({ "required": required, "content": { media: { "schema": schema } } });
        if matches!(route.body, Payload::Envelope) {
            operation["requestBody"]["description"] = json!("A signed envelope's bytes (PROTOCOL.md §3)");
        }
    }
    let mut responses = Map::new();
    for status in route.statuses {
        let response = match ERRORS.iter().find(|(code, _, _)| code == status) {
            Some((_, name, _)) => json!({ "$ref": format!("#/components/responses/{name}") }),
            None => success(route, answers),
        };
        responses.insert(status.to_string(), response);
    }
    responses.insert("default".to_owned(), json!({ "$ref": "#/components/responses/Failed" }));
    operation["responses"] = Value::Object(responses);
    operation
}

fn success(route: &Route, answers: &mut SchemaGenerator) -> Value {
    let mut description = route.summary.to_owned();
    let (media, schema) = match route.answer {
        Reply::Json(answer) => ("application/json", answer(answers).to_value()),
        Reply::Html => ("text/html", json!({ "type": "string" })),
        Reply::Metrics => ("application/openmetrics-text", json!({ "type": "string" })),
        Reply::Events(data) => {
            let data = data(answers).to_value();
            let name = data["$ref"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default().to_owned();
            description.push_str(&format!("; each event's `data` is JSON of schema `{name}`"));
            ("text/event-stream", json!({ "type": "string", "x-event-data": data }))
        }
        Reply::OpenApi => ("application/json", json!({ "type": "object" })),
    };
    json!({ "description": description, "content": { media: { "schema": schema } } })
}

/// The path's parameters (`{name}`), described by the route's `about` in order.
fn path_parameters(route: &Route) -> Vec<Value> {
    let names = route.path.split('/').filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'));
    names
        .enumerate()
        .map(|(index, name)| {
            let param = route.about.get(index).copied().unwrap_or(hex(""));
            let schema = match param.form {
                Form::Height => json!({ "type": "integer", "minimum": 0 }),
                Form::Hex => json!({ "type": "string", "pattern": HEX_64 }),
                Form::Cell => json!({ "type": "string", "pattern": CELL }),
            };
            json!({ "name": name, "in": "path", "required": true, "description": param.text, "schema": schema })
        })
        .collect()
}

/// A query type's fields as query parameters: each with its doc comment as description.
fn query_parameters(query: SchemaFn) -> Vec<Value> {
    let (_, requests) = generators();
    let mut generator = requests.settings().clone().with(|settings| settings.inline_subschemas = true).into_generator();
    let schema = query(&mut generator).to_value();
    let required: Vec<&str> =
        schema["required"].as_array().map(|list| list.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else { return Vec::new() };
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = property.clone();
            let description = property.as_object_mut().and_then(|fields| fields.remove("description"));
            // A query parameter is absent rather than null.
            if let Some(types) = property["type"].as_array() {
                let types: Vec<Value> = types.iter().filter(|kind| *kind != "null").cloned().collect();
                property["type"] = if types.len() == 1 { types[0].clone() } else { Value::Array(types) };
            }
            let mut parameter = json!({
                "name": name,
                "in": "query",
                "required": required.contains(&name.as_str()),
                "schema": property,
            });
            if let Some(description) = description {
                parameter["description"] = description;
            }
            parameter
        })
        .collect()
}

/// The name of a type's schema in `components.schemas` (or its JSON Schema type, for a simple one).
fn type_name(schema: SchemaFn, generator: &mut SchemaGenerator) -> String {
    let schema = schema(generator).to_value();
    match schema["$ref"].as_str() {
        Some(reference) => reference.rsplit('/').next().unwrap_or(reference).to_owned(),
        None => schema["type"].as_str().unwrap_or("any").to_owned(),
    }
}

/// What a route takes, for docs/API.md: its query's parameters and its body's type.
fn takes(route: &Route, requests: &mut SchemaGenerator) -> String {
    let mut takes = Vec::new();
    if let Some(query) = route.query {
        let names: Vec<String> = query_parameters(query)
            .iter()
            .map(|parameter| {
                let name = parameter["name"].as_str().unwrap_or_default();
                if parameter["required"] == true { name.to_owned() } else { format!("{name}?") }
            })
            .collect();
        takes.push(format!("`?{}`", names.join("&")));
    }
    match route.body {
        Payload::None => {}
        Payload::Json(body) => takes.push(format!("`{}`", type_name(body, requests))),
        Payload::OptionalJson(body) => takes.push(format!("`{}` or nothing", type_name(body, requests))),
        Payload::Envelope => takes.push("an envelope's bytes".to_owned()),
    }
    takes.join(", ")
}

/// `docs/API.md`: the routes as a table, from the same tables the router is built from.
pub fn markdown(routes: &[&Route]) -> String {
    let (mut answers, mut requests) = generators();
    let mut text = format!(
        "# The kos node's HTTP API\n\n\
         Made from the node's route tables (`ROUTES` in `node/src/api/`) by \
         `KOS_WRITE_DOCS=1 cargo test -p kos --lib api::doc`; a test fails when this file and the tables differ. A \
         running node serves the same routes as `GET /openapi.json`, with the JSON Schema of every request and answer \
         type named here.\n\n{ABOUT}\n\n\
         | method | path | what it does | takes | answers | statuses |\n|---|---|---|---|---|---|\n",
    );
    for route in routes {
        let statuses: Vec<String> = route.statuses.iter().map(u16::to_string).collect();
        let answer = match route.answer {
            Reply::Json(answer) => format!("`{}`", type_name(answer, &mut answers)),
            Reply::Html => "HTML".to_owned(),
            Reply::Metrics => "OpenMetrics text".to_owned(),
            Reply::Events(data) => format!("server-sent events of `{}`", type_name(data, &mut answers)),
            Reply::OpenApi => "OpenAPI 3.1".to_owned(),
        };
        text.push_str(&format!(
            "| {} | `{}` | {} | {} | {} | {} |\n",
            route.method,
            route.path,
            route.summary.replace('|', "\\|"),
            takes(route, &mut requests),
            answer,
            statuses.join(", ")
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Vec<&'static Route> {
        super::super::routes().collect()
    }

    /// docs/API.md is the route table; `KOS_WRITE_DOCS=1` writes it anew.
    #[test]
    fn the_api_document_is_made_from_the_route_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/API.md");
        let made = markdown(&routes());
        if std::env::var_os("KOS_WRITE_DOCS").is_some() {
            std::fs::write(&path, &made).expect("writing docs/API.md");
        }
        let written = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            written == made,
            "docs/API.md differs from the route table: run `KOS_WRITE_DOCS=1 cargo test -p kos --lib api::doc`"
        );
    }

    /// Every route is in the document with exactly its statuses, its path parameters described, every error status
    /// one of the shared error answers, and every `$ref` resolving.
    #[test]
    fn the_openapi_document_lists_every_route_with_its_statuses_and_types() {
        let document = openapi(&routes());
        for route in routes() {
            let operation = &document["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
            assert!(operation.is_object(), "{} {} is not in the document", route.method, route.path);
            let listed: Vec<u16> = operation["responses"]
                .as_object()
                .unwrap()
                .keys()
                .filter(|status| *status != "default")
                .map(|status| status.parse().unwrap())
                .collect();
            let mut statuses = route.statuses.to_vec();
            statuses.sort_unstable();
            assert_eq!(listed, statuses, "{} {}", route.method, route.path);
            for status in route.statuses.iter().filter(|status| **status >= 400) {
                assert!(is_documented_error(*status), "{} {}: {status} has no error answer", route.method, route.path);
            }
            let placeholders = route.path.matches('{').count();
            assert_eq!(
                route.about.len(),
                placeholders,
                "{} {}: describe each path parameter",
                route.method,
                route.path
            );
        }
        let text = document.to_string();
        for reference in text.split("\"$ref\":\"#/").skip(1) {
            let pointer = format!("/{}", reference.split('"').next().unwrap());
            assert!(document.pointer(&pointer).is_some(), "{pointer} does not resolve");
        }
    }

    /// The schemas are JSON Schema 2020-12 of the real types: an answer's fields and an error's.
    #[test]
    fn answers_and_errors_have_their_types_schemas() {
        assert_eq!(shapes_that_differ(&routes()), Vec::<String>::new(), "types read and answered in two shapes");
        let document = openapi(&routes());
        // Two types of one name get a number (`Status2`): each type must have a name of its own.
        let schemas = document["components"]["schemas"].as_object().unwrap();
        let numbered: Vec<&String> = schemas
            .keys()
            .filter(|name| {
                let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
                base.len() < name.len() && schemas.contains_key(base)
            })
            .collect();
        assert!(numbered.is_empty(), "types share a name: {numbered:?}");
        let error = &document["components"]["schemas"]["Error"];
        assert_eq!(error["required"], json!(["error"]), "{error:#}");
        let status = &document["paths"]["/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
        let name = status["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
        let properties = &document["components"]["schemas"][name]["properties"];
        for field in ["network", "peer_id", "account", "ledger", "gossip"] {
            assert!(properties.get(field).is_some(), "/status answers no {field}: {properties:#}");
        }
    }
}
