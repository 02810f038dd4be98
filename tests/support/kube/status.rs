//! `Status` bodies (meta/v1), worded as the apiserver's `k8s.io/apimachinery/pkg/api/errors` words them.

use serde_json::{Value, json};

use super::resources::ResourceType;

#[derive(Debug, Clone)]
pub struct Status {
    pub code: u16,
    /// "" for none (the apiserver leaves it empty for some internal errors).
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl Status {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
        });
        if !self.reason.is_empty() {
            v["reason"] = json!(self.reason);
        }
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v["code"] = json!(self.code);
        v
    }

    fn new(code: u16, reason: &'static str, message: impl Into<String>, details: Option<Value>) -> Status {
        Status { code, reason, message: message.into(), details }
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Status {
        Status::new(
            404,
            "NotFound",
            format!("{} {name:?} not found", rt.qualified()),
            Some(details(rt, name)),
        )
    }

    pub fn namespace_not_found(ns: &str) -> Status {
        Status::new(
            404,
            "NotFound",
            format!("namespaces {ns:?} not found"),
            Some(json!({"name": ns, "kind": "namespaces"})),
        )
    }

    /// A known group/version, an unknown resource or subresource.
    pub fn no_such_resource() -> Status {
        Status::new(404, "NotFound", "the server could not find the requested resource", Some(json!({})))
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Status {
        Status::new(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", rt.qualified()),
            Some(details(rt, name)),
        )
    }

    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Status {
        Status::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} {name:?}: {why}", rt.qualified()),
            Some(details(rt, name)),
        )
    }

    pub fn modified(rt: &ResourceType, name: &str) -> Status {
        Status::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn apply_conflict(message: String, causes: Vec<Value>) -> Status {
        Status::new(409, "Conflict", message, Some(json!({"causes": causes})))
    }

    pub fn bad_request(message: impl Into<String>) -> Status {
        Status::new(400, "BadRequest", message, None)
    }

    /// `NewInvalid`: 422 with one cause per field error (`field`, `reason`, `message`).
    pub fn invalid(kind: &str, group: &str, name: &str, causes: &[(&str, &str, String)]) -> Status {
        let qualified = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let list: Vec<String> = causes.iter().map(|(f, _, m)| format!("{f}: {m}")).collect();
        let message = match list.as_slice() {
            [one] => format!("{qualified} {name:?} is invalid: {one}"),
            many => format!("{qualified} {name:?} is invalid: [{}]", many.join(", ")),
        };
        let causes: Vec<Value> =
            causes.iter().map(|(f, r, m)| json!({"reason": r, "message": m, "field": f})).collect();
        let mut d = json!({"name": name, "kind": kind, "causes": causes});
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        Status::new(422, "Invalid", message, Some(d))
    }

    /// `NewGenericServerResponse(422, …)`, as a JSON patch that does not apply is answered.
    pub fn unprocessable(cause: &str) -> Status {
        Status::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
            Some(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": cause}]})),
        )
    }

    pub fn method_not_allowed() -> Status {
        Status::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            Some(json!({})),
        )
    }

    pub fn unsupported_media_type(accepted: &[&str]) -> Status {
        Status::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
            None,
        )
    }

    pub fn not_acceptable() -> Status {
        Status::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
            None,
        )
    }

    pub fn unauthorized() -> Status {
        Status::new(401, "Unauthorized", "Unauthorized", None)
    }

    pub fn forbidden(rt: &ResourceType, name: &str, verb: &str, ns: &str, user: &str) -> Status {
        let what = if name.is_empty() { rt.qualified() } else { format!("{} {name:?}", rt.qualified()) };
        let scope = if ns.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {ns:?}")
        };
        Status::new(
            403,
            "Forbidden",
            format!(
                "{what} is forbidden: User {user:?} cannot {verb} resource {:?} in API group {:?} {scope}",
                rt.plural, rt.group
            ),
            Some(details(rt, name)),
        )
    }

    pub fn expired(message: impl Into<String>) -> Status {
        Status::new(410, "Expired", message, None)
    }

    pub fn too_large_resource_version(asked: u64, current: u64) -> Status {
        Status::new(
            504,
            "Timeout",
            format!("Too large resource version: {asked}, current: {current}"),
            Some(
                json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
            ),
        )
    }

    /// What `fail_next` answers with.
    pub fn injected(code: u16) -> Status {
        let (reason, message) = match code {
            429 => (
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later",
            ),
            500 => ("InternalError", "Internal error occurred: injected by the test"),
            503 => ("ServiceUnavailable", "the server is currently unable to handle the request"),
            504 => (
                "Timeout",
                "the server was unable to return a response in the time allotted, but may still be processing the request",
            ),
            401 => ("Unauthorized", "Unauthorized"),
            403 => ("Forbidden", "forbidden"),
            404 => ("NotFound", "the server could not find the requested resource"),
            409 => (
                "Conflict",
                "the object has been modified; please apply your changes to the latest version and try again",
            ),
            _ => ("", "injected by the test"),
        };
        Status::new(code, reason, message, None)
    }

    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(500, "", message, None)
    }
}

fn details(rt: &ResourceType, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": rt.plural});
    if !rt.group.is_empty() {
        d["group"] = json!(rt.group);
    }
    d
}

/// The `Status` of a successful delete: `{"status": "Success", "details": {name, group, kind, uid}}`.
pub fn deleted(rt: &ResourceType, name: &str, uid: &str) -> Value {
    let mut d = details(rt, name);
    d["uid"] = json!(uid);
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d})
}
