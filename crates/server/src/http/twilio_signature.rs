//! Twilio's request signature (`X-Twilio-Signature`), and the extractor
//! that lets only requests signed with the account's auth token through.
//!
//! Twilio signs the full URL it requested followed by every POST
//! parameter, sorted by name, as name and value with nothing between:
//! `base64(HMAC-SHA1(auth_token, url + name₁ + value₁ + name₂ + …))`. The
//! URL is rebuilt here as `KLAXON_PUBLIC_URL` + the request's path and
//! query, so it must be exactly the URL Twilio is configured with (or was
//! given in a call or a status callback).

use axum::body::Bytes;
use axum::extract::{FromRequest, OriginalUri, Request};
use axum::http::header::CONTENT_TYPE;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::error::ApiError;
use crate::app::AppState;

/// The header Twilio signs its requests in.
pub const HEADER: &str = "x-twilio-signature";

/// The MAC of a request to `url` with form `params`, not yet finalised.
fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    #[allow(clippy::expect_used)]
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// The signature Twilio sends with a request to `url` with form `params`.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    BASE64.encode(mac(auth_token, url, params).finalize().into_bytes())
}

/// Whether `given` (the header's value) is the signature of the request;
/// the comparison takes the same time wherever the first difference is.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], given: &str) -> bool {
    let Ok(given) = BASE64.decode(given.trim()) else {
        return false;
    };
    mac(auth_token, url, params).verify_slice(&given).is_ok()
}

/// A request Twilio signed: its form fields and query parameters.
/// Extracting it answers 404 when Twilio is not configured and 403 when
/// the signature is missing or wrong, before the handler runs.
#[derive(Debug)]
pub struct Signed {
    fields: Vec<(String, String)>,
    query: Vec<(String, String)>,
}

impl Signed {
    /// A form field (the first of that name).
    pub fn field(&self, name: &str) -> Option<&str> {
        first(&self.fields, name)
    }

    /// A query parameter (the first of that name).
    pub fn query(&self, name: &str) -> Option<&str> {
        first(&self.query, name)
    }
}

fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl FromRequest<AppState> for Signed {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let Some(twilio) = &state.config.twilio else {
            return Err(ApiError::NotFound);
        };
        let uri = match req.extensions().get::<OriginalUri>() {
            Some(OriginalUri(uri)) => uri.clone(),
            None => req.uri().clone(),
        };
        let given = req
            .headers()
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let is_form = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        let Some(given) = given else {
            return Err(ApiError::Forbidden("missing X-Twilio-Signature"));
        };
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(format!("could not read the request body: {e}"))
            }
        })?;
        // Only form parameters are signed; any other body is not read.
        let fields: Vec<(String, String)> = if is_form {
            form_urlencoded::parse(&body).into_owned().collect()
        } else {
            Vec::new()
        };
        let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let url = format!("{}{path_and_query}", state.config.public_url);
        if !verify(&twilio.auth_token, &url, &fields, &given) {
            tracing::warn!(%url, "Twilio webhook with a bad signature refused");
            return Err(ApiError::Forbidden("invalid X-Twilio-Signature"));
        }
        let query = uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        Ok(Signed { fields, query })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    /// The worked example of Twilio's webhook security guide (checked
    /// against an independent HMAC-SHA1), in two versions of its numbers.
    #[test]
    fn matches_twilios_published_examples() {
        for (caller, want) in [
            ("+14158675310", "GvWf1cFY/Q7PnoempGyD5oXAezc="),
            ("+12349013030", "0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
        ] {
            // Out of order on purpose: the signature sorts them.
            let params = pairs(&[
                ("To", "+18005551212"),
                ("Digits", "1234"),
                ("From", caller),
                ("CallSid", "CA1234567890ABCDE"),
                ("Caller", caller),
            ]);
            assert_eq!(signature("12345", URL, &params), want);
            assert!(verify("12345", URL, &params, want));
        }
    }

    #[test]
    fn any_change_breaks_it() {
        let params = pairs(&[("From", "+14158675310"), ("Body", "4")]);
        let good = signature("12345", URL, &params);
        assert!(verify("12345", URL, &params, &good));
        assert!(!verify("12346", URL, &params, &good), "another token");
        assert!(
            !verify(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=3",
                &params,
                &good
            ),
            "another URL"
        );
        let changed = pairs(&[("From", "+14158675310"), ("Body", "6")]);
        assert!(!verify("12345", URL, &changed, &good), "another value");
        let more = pairs(&[("From", "+14158675310"), ("Body", "4"), ("X", "")]);
        assert!(!verify("12345", URL, &more, &good), "another field");
        for bad in ["", "not base64!", &good[..good.len() - 2], "AAAA"] {
            assert!(!verify("12345", URL, &params, bad), "{bad:?}");
        }
    }

    #[test]
    fn sorts_repeated_names_by_value() {
        let a = pairs(&[("K", "2"), ("K", "1")]);
        let b = pairs(&[("K", "1"), ("K", "2")]);
        assert_eq!(signature("t", URL, &a), signature("t", URL, &b));
    }
}
