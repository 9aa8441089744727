//! Every answer a test gets from a node's API is held to the node's own `/openapi.json`: its status is one the
//! route lists (or the document's `default`, for a request that timed out or a node that failed), and a JSON
//! answer fits the route's schema for that status. So every integration test that talks to the API checks the
//! document against what the node really answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};

/// The document, fetched from the first node asked (every node of a test run is the same binary).
static DOCUMENT: OnceLock<Value> = OnceLock::new();
/// Validators by (method, route path, status), made once.
type Validators = HashMap<(String, String, String), Arc<jsonschema::Validator>>;
static VALIDATORS: OnceLock<Mutex<Validators>> = OnceLock::new();

/// Statuses any route may answer beyond its own: a request the server timed out, a node that failed.
const SERVER_STATUSES: &[u16] = &[408, 500];

/// Checks one answer of the API at `address`; `Err` says how it differs from the document.
pub fn check(address: &str, method: &str, path: &str, status: u16, body: &[u8]) -> Result<(), String> {
    let path = path.split('?').next().unwrap_or(path);
    if path == "/openapi.json" {
        return Ok(());
    }
    let document = match DOCUMENT.get() {
        Some(document) => document,
        None => {
            let fetched = super::http::raw_get(address, "/openapi.json")
                .map_err(|error| format!("fetching /openapi.json from {address}: {error}"))?;
            let parsed: Value = serde_json::from_slice(&fetched.body)
                .map_err(|error| format!("/openapi.json of {address} is not JSON: {error}"))?;
            DOCUMENT.get_or_init(|| parsed)
        }
    };
    let Some(route) = route_of(document, path) else {
        // Not a route of the API (a test probing an unknown path): nothing to hold it to.
        return Ok(());
    };
    let method = method.to_ascii_lowercase();
    let Some(operation) = document["paths"][route.as_str()].get(&method) else {
        return Ok(()); // A method the route does not take: the router answers 405.
    };
    let key = if operation["responses"].get(status.to_string()).is_some() {
        status.to_string()
    } else if SERVER_STATUSES.contains(&status) {
        "default".to_owned()
    } else {
        return Err(format!(
            "{method} {path} answered {status}, which /openapi.json does not list for {route}: {}",
            String::from_utf8_lossy(body)
        ));
    };
    let mut response = &operation["responses"][&key];
    if let Some(reference) = response["$ref"].as_str() {
        response = document.pointer(reference.trim_start_matches('#')).ok_or_else(|| {
            format!("/openapi.json: {method} {route} {key} refers to {reference}, which is not there")
        })?;
    }
    let Some(schema) = response.pointer("/content/application~1json/schema") else { return Ok(()) };
    let validator = validator(document, (method.clone(), route.clone(), key), schema)?;
    let answer: Value = serde_json::from_slice(body).map_err(|error| {
        format!("{method} {path} answered {status} with no JSON ({error}): {}", String::from_utf8_lossy(body))
    })?;
    let problems: Vec<String> =
        validator.iter_errors(&answer).map(|error| format!("{} at {}", error, error.instance_path())).collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{method} {path} answered {status} with JSON that does not fit its schema in /openapi.json:\n{}\n{answer:#}",
            problems.join("\n")
        ))
    }
}

/// The document's route that `path` is: the template that matches it segment by segment, a literal segment
/// before a parameter at the first place they differ (as the router picks `/jobs/match` over `/jobs/{id}`).
fn route_of(document: &Value, path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    document["paths"]
        .as_object()?
        .keys()
        .filter(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            parts.len() == segments.len()
                && parts.iter().zip(&segments).all(|(part, segment)| part.starts_with('{') || part == segment)
        })
        // Literal segments sort before parameters, place by place.
        .max_by_key(|template| template.split('/').map(|part| !part.starts_with('{')).collect::<Vec<bool>>())
        .cloned()
}

fn validator(
    document: &Value,
    key: (String, String, String),
    schema: &Value,
) -> Result<Arc<jsonschema::Validator>, String> {
    let mut validators =
        VALIDATORS.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(validator) = validators.get(&key) {
        return Ok(validator.clone());
    }
    // The schema with the document's components beside it, so that its `$ref`s resolve.
    let mut root = json!({ "components": document["components"] });
    if let (Some(root), Some(schema)) = (root.as_object_mut(), schema.as_object()) {
        root.extend(schema.clone());
    }
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .map_err(|error| format!("the schema of {key:?} in /openapi.json is not JSON Schema 2020-12: {error}"))?;
    let validator = Arc::new(validator);
    validators.insert(key, validator.clone());
    Ok(validator)
}
