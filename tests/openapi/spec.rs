//! The OpenAPI document as a checker of real answers: status, headers,
//! content type and JSON body, against the operation that describes them.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::gateway::http;

/// The document, and which (path, method, status) answers were seen.
pub(crate) struct Spec {
    pub(crate) doc: Value,
    seen: BTreeSet<(String, String, u16)>,
}

/// An answer that passed the checks.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    /// The JSON body; null for other content types.
    pub(crate) body: Value,
    pub(crate) text: String,
}

/// What describes an answer.
#[derive(Clone, Copy)]
enum Described<'a> {
    /// The operation of this path template (and the request's method).
    Operation(&'a str),
    /// `components/responses/<name>`: the answers to requests no operation
    /// describes (an unknown path, a wrong method).
    Response(&'a str),
}

impl Spec {
    pub(crate) fn new(document: &str) -> Self {
        Self {
            doc: serde_json::from_str(document).expect("the document is JSON"),
            seen: BTreeSet::new(),
        }
    }

    /// Follows a `$ref` into the document.
    pub(crate) fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value["$ref"].as_str() {
            Some(pointer) => self
                .doc
                .pointer(pointer.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling {pointer}")),
            None => value,
        }
    }

    /// `GET path`, checked against `template`'s operation.
    pub(crate) async fn get(&mut self, admin: SocketAddr, path: &str, template: &str) -> Answer {
        let described = Described::Operation(template);
        self.call(admin, Method::GET, path, described, None, String::new())
            .await
    }

    /// `POST path` with `body` and the bearer `token`, checked against
    /// `template`'s operation.
    pub(crate) async fn post(
        &mut self,
        admin: SocketAddr,
        (path, template): (&str, &str),
        token: Option<&str>,
        body: impl Into<String>,
    ) -> Answer {
        let described = Described::Operation(template);
        self.call(admin, Method::POST, path, described, token, body.into())
            .await
    }

    /// A request no operation describes, checked against
    /// `components/responses/<response>`.
    pub(crate) async fn unlisted(
        &mut self,
        admin: SocketAddr,
        method: Method,
        path: &str,
        response: &str,
    ) -> Answer {
        let described = Described::Response(response);
        self.call(admin, method, path, described, None, String::new())
            .await
    }

    async fn call(
        &mut self,
        admin: SocketAddr,
        method: Method,
        path: &str,
        described: Described<'_>,
        token: Option<&str>,
        body: String,
    ) -> Answer {
        let mut request = http()
            .request(method.clone(), format!("http://{admin}{path}"))
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let what = format!("{method} {path} -> {status}");
        let described = match described {
            Described::Operation(template) => {
                let verb = method.as_str().to_lowercase();
                let operation = &self.doc["paths"][template][verb.as_str()];
                assert!(operation.is_object(), "{what}: no {verb} {template}");
                self.seen
                    .insert((template.to_owned(), verb, status.as_u16()));
                let described = &operation["responses"][status.as_str()];
                assert!(described.is_object(), "{what}: status not documented");
                self.resolve(described).clone()
            }
            Described::Response(name) => self.doc["components"]["responses"][name].clone(),
        };
        for (name, header) in described["headers"].as_object().into_iter().flatten() {
            let header = self.resolve(header);
            if header["required"] != true {
                continue;
            }
            let value = response.headers().get(name.as_str());
            let value = value.unwrap_or_else(|| panic!("{what}: no {name} header"));
            let value = value.to_str().unwrap();
            // A number when it reads as one (Retry-After), else a string.
            let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
            self.validate(&header["schema"], &value)
                .unwrap_or_else(|e| panic!("{what}: {name}: {e}"));
        }
        let kind = response.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let text = response.text().await.unwrap();
        let media = described["content"]
            .as_object()
            .unwrap_or_else(|| panic!("{what}: no content documented"))
            .iter()
            .find(|(documented, _)| media_matches(documented, &kind))
            .map(|(_, media)| media)
            .unwrap_or_else(|| panic!("{what}: content type {kind} not documented"));
        let mut body = Value::Null;
        if essence(&kind) == "application/json" {
            body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
            self.validate(&media["schema"], &body)
                .unwrap_or_else(|e| panic!("{what}: {e}\n{body:#}"));
        }
        Answer { status, body, text }
    }

    /// A validator of `schema`, whose `$ref`s point into the document's
    /// components: they resolve against a root that carries them.
    pub(crate) fn compile(&self, schema: &Value) -> Result<jsonschema::Validator, String> {
        let mut root = schema.clone();
        root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        root["components"] = self.doc["components"].clone();
        jsonschema::draft202012::new(&root).map_err(|e| e.to_string())
    }

    /// Validates `instance` against `schema`, naming every violation.
    pub(crate) fn validate(&self, schema: &Value, instance: &Value) -> Result<(), String> {
        let validator = self.compile(schema)?;
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Every documented answer was seen, but the `excused` (path, method,
    /// status) ones.
    pub(crate) fn assert_all_seen(&self, excused: &[(&str, &str, u16)]) {
        let mut missing = Vec::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for (verb, operation) in item.as_object().unwrap() {
                let Some(responses) = operation["responses"].as_object() else {
                    continue;
                };
                for status in responses.keys() {
                    let status: u16 = status.parse().unwrap();
                    let key = (path.clone(), verb.clone(), status);
                    let is_excused = excused
                        .iter()
                        .any(|&(p, v, s)| p == path && v == verb && s == status);
                    if !self.seen.contains(&key) && !is_excused {
                        missing.push(format!("{verb} {path} {status}"));
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "documented, never produced: {missing:?}"
        );
    }
}

fn essence(media: &str) -> String {
    media.split(';').next().unwrap().trim().to_lowercase()
}

/// Whether a response's `Content-Type` is the documented media type: the
/// same type, with every documented parameter (`version=0.0.4`).
fn media_matches(documented: &str, actual: &str) -> bool {
    let params = |media: &str| -> Vec<String> {
        media
            .split(';')
            .skip(1)
            .map(|p| p.trim().to_lowercase())
            .collect()
    };
    let actual_params = params(actual);
    essence(documented) == essence(actual)
        && params(documented).iter().all(|p| actual_params.contains(p))
}
