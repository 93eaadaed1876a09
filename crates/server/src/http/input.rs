//! Request bodies and query strings: JSON or form-encoded, with every
//! failure turned into a clear 4xx JSON error.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use klaxon_core::validate::TextKind;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::error::ApiError;

/// A request body deserialised from `application/json` or
/// `application/x-www-form-urlencoded` (what `curl -d` sends). An empty body
/// without a content type reads as an empty form.
pub struct Input<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Input<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else if body_timed_out(&e) {
                ApiError::RequestTimeout
            } else {
                ApiError::BadRequest(format!("could not read the request body: {e}"))
            }
        })?;
        match content_type.as_deref() {
            Some(ct) if ct == "application/json" || ct.ends_with("+json") => parse_json(&bytes),
            Some("application/x-www-form-urlencoded") => parse_form(&bytes),
            None if bytes.is_empty() => parse_form(b""),
            None if bytes.first() == Some(&b'{') => parse_json(&bytes),
            None => parse_form(&bytes),
            Some(_) => Err(ApiError::UnsupportedMediaType),
        }
        .map(Input)
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}" as &[u8]
    } else {
        bytes
    };
    // Control characters can only arrive escaped (`\u0000`), so only a
    // well-formed document can hold one; a malformed one is a 400 below.
    if let Ok(document) = serde_json::from_slice::<Value>(bytes) {
        let mut checks = Checks::default();
        check_json(&mut checks, &document, "", None);
        checks.finish()?;
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        // serde stops at the first type mismatch, before it has seen the
        // whole document; only well-formed JSON gets a field error.
        let well_formed = serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok();
        match inner.classify() {
            serde_json::error::Category::Data if well_formed => {
                field_error(&path, &inner.to_string())
            }
            _ => ApiError::BadRequest(format!("malformed JSON: {inner}")),
        }
    })
}

fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut checks = Checks::default();
    for (name, value) in form_urlencoded::parse(bytes) {
        if TextKind::Line.refuses(&name) {
            checks.add(
                "base",
                "parameter names must not contain control characters",
            );
        } else if kind_of(&name).refuses(&value) {
            checks.add(&name, kind_of(&name).message());
        }
    }
    checks.finish()?;
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(bytes));
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        field_error(&path, &err.into_inner().to_string())
    })
}

/// Fields whose values are free text, where tab, newline and carriage
/// return are allowed; every other string is a single line.
const FREE_TEXT: &[&str] = &["message", "description", "details"];

fn kind_of(field: &str) -> TextKind {
    if FREE_TEXT.contains(&field) {
        TextKind::Text
    } else {
        TextKind::Line
    }
}

/// Refuses control characters in every key and string of a JSON value,
/// naming fields as serde does (`assignment.id`, `users[1]`). Inside a
/// free-text field (`details` is arbitrary JSON) everything is named after
/// that field and held to its rule.
pub fn check_json(checks: &mut Checks, value: &Value, path: &str, free_text: Option<&str>) {
    let here = if path.is_empty() { "base" } else { path };
    match value {
        Value::String(s) => match free_text {
            Some(field) if TextKind::Text.refuses(s) => {
                checks.add(field, TextKind::Text.message());
            }
            None if TextKind::Line.refuses(s) => checks.add(here, TextKind::Line.message()),
            _ => {}
        },
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_json(checks, item, &format!("{path}[{i}]"), free_text);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                match free_text {
                    Some(field) => {
                        if TextKind::Text.refuses(key) {
                            checks.add(field, TextKind::Text.message());
                        }
                        check_json(checks, item, path, free_text);
                    }
                    None if TextKind::Line.refuses(key) => {
                        checks.add(here, "field names must not contain control characters");
                    }
                    None => {
                        let child = if path.is_empty() {
                            key.clone()
                        } else {
                            format!("{path}.{key}")
                        };
                        let free = FREE_TEXT.contains(&key.as_str()).then_some(child.as_str());
                        check_json(checks, item, &child, free);
                    }
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Turns a serde message into a 422 on the field it names.
fn field_error(path: &str, message: &str) -> ApiError {
    // serde says "missing field `x`" with the path of the parent.
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        return ApiError::field(field, "can't be blank");
    }
    let field = if path == "." || path.is_empty() {
        "base"
    } else {
        path
    };
    // Drop serde's " at line 1 column 20" suffix: the field name says where.
    let message = message.split(" at line ").next().unwrap_or(message);
    ApiError::field(field, message)
}

/// The query string deserialised into `T`; bad values are a 422 naming the
/// parameter.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_form(parts.uri.query().unwrap_or("").as_bytes()).map(Params)
    }
}

/// Deserialises a field that may be absent (`None`), `null` (`Some(None)`)
/// or a value (`Some(Some(v))`), for partial updates. Use with
/// `#[serde(default, deserialize_with = "nullable")]`.
pub fn nullable<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// Collects field errors for one 422 response.
#[derive(Default)]
pub struct Checks(super::error::FieldErrors);

impl Checks {
    /// Records a problem with a field.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        let message = message.into();
        let messages = self.0.entry(field.to_owned()).or_default();
        if !messages.contains(&message) {
            messages.push(message);
        }
    }

    /// Requires a non-blank string of at most `max` bytes; returns it trimmed.
    pub fn required(&mut self, field: &str, value: Option<&str>, max: usize) -> String {
        match value.map(str::trim) {
            None | Some("") => {
                self.add(field, "can't be blank");
                String::new()
            }
            Some(v) => {
                self.max_len(field, v, max);
                v.to_owned()
            }
        }
    }

    /// For partial updates: a submitted value must be non-blank and at
    /// most `max` bytes; an absent one keeps `before`.
    pub fn required_or(
        &mut self,
        field: &str,
        value: Option<&str>,
        max: usize,
        before: &str,
    ) -> String {
        match value {
            Some(v) => self.required(field, Some(v), max),
            None => before.to_owned(),
        }
    }

    /// Checks an optional string's length; blank becomes `None`.
    pub fn optional(&mut self, field: &str, value: Option<&str>, max: usize) -> Option<String> {
        let v = value.map(str::trim).filter(|v| !v.is_empty())?;
        self.max_len(field, v, max);
        Some(v.to_owned())
    }

    /// Checks a string's length in bytes.
    pub fn max_len(&mut self, field: &str, value: &str, max: usize) {
        if value.len() > max {
            self.add(field, format!("is too long (maximum is {max} bytes)"));
        }
    }

    /// Checks an integer's range.
    pub fn range(&mut self, field: &str, value: i64, min: i64, max: i64) {
        if !(min..=max).contains(&value) {
            self.add(field, format!("must be between {min} and {max}"));
        }
    }

    /// `Ok` when nothing was recorded, else the 422.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Unprocessable(self.0))
        }
    }
}

/// An audit changeset being built: `{field: [old, new]}` for each field
/// that changed.
#[derive(Default)]
pub struct Changeset(serde_json::Map<String, serde_json::Value>);

impl Changeset {
    /// Records `field` if `old` and `new` differ.
    pub fn diff<T: serde::Serialize + PartialEq + ?Sized>(
        &mut self,
        field: &str,
        old: &T,
        new: &T,
    ) -> &mut Self {
        if old != new {
            self.0
                .insert(field.to_owned(), serde_json::json!([old, new]));
        }
        self
    }

    /// Records `field` with a value of its own (e.g. `"changed"` for secrets).
    pub fn note(&mut self, field: &str, value: serde_json::Value) -> &mut Self {
        self.0.insert(field.to_owned(), value);
        self
    }

    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The changeset as stored on the event.
    pub fn into_value(self) -> serde_json::Value {
        serde_json::Value::Object(self.0)
    }
}

/// Whether reading a body failed because it did not arrive within
/// `app::BODY_TIMEOUT` (a 408, not a malformed request).
pub fn body_timed_out(rejection: &axum::extract::rejection::BytesRejection) -> bool {
    let mut source = std::error::Error::source(rejection);
    while let Some(err) = source {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(body: Value) -> Vec<String> {
        let mut checks = Checks::default();
        check_json(&mut checks, &body, "", None);
        checks.0.into_keys().collect()
    }

    #[test]
    fn json_control_characters_name_their_field() {
        assert!(refused(json!({"name": "ok", "message": "a\tb\r\n", "n": 1})).is_empty());
        assert_eq!(refused(json!({"name": "a\tb"})), ["name"]);
        assert_eq!(refused(json!({"message": "a\u{0}b"})), ["message"]);
        assert_eq!(
            refused(json!({"assignment": {"id": "\u{1}"}})),
            ["assignment.id"]
        );
        assert_eq!(refused(json!({"users": ["ok", "\u{7f}"]})), ["users[1]"]);
        assert_eq!(refused(json!({"a\u{0}": 1})), ["base"]);
        assert_eq!(refused(json!("\u{0}")), ["base"]);
        // Anything inside `details` is named `details`, keys included.
        assert!(refused(json!({"details": {"a\tb": ["c\nd"]}})).is_empty());
        for details in [
            json!({"a": {"b": [1, "\u{0}"]}}),
            json!({"a": {"\u{0}": null}}),
            json!("\u{1b}"),
        ] {
            assert_eq!(refused(json!({ "details": details })), ["details"]);
        }
    }

    #[test]
    fn form_control_characters_name_their_parameter() {
        let err = |query: &str| match parse_form::<Value>(query.as_bytes()) {
            Err(ApiError::Unprocessable(errors)) => errors.into_keys().collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        assert_eq!(err("q=a%00b"), ["q"]);
        assert_eq!(err("message=a%09b&key=%0A"), ["key"]);
        assert_eq!(err("a%00=b"), ["base"]);
        assert!(err("message=a%09b%0D%0A&q=x").is_empty());
    }
}
