//! `GET|POST /links/{token}`: the pages behind the one-click answer links
//! in email (and other) pages.
//!
//! A GET never changes anything: mail scanners and link previews follow
//! every link in a message, so GET shows the incident and one button, and
//! only the POST that button sends acts. The POST records the link as
//! used before acting, so a link works once. The token alone authorises
//! (it names the user, who must still be allowed to act); the account
//! comes from the signed token, so one account's link cannot reach
//! another's incident.
//!
//! These are browser pages: HTML for every outcome, including errors,
//! never cached, never indexed, sending no referrer (the URL is a
//! credential), under a CSP that allows only the page's own stylesheet
//! and a form posting back to this server.

use std::sync::LazyLock;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use klaxon_core::time::Millis;
use klaxon_core::Role;
use klaxon_store::{ActOutcome, Actor, Incident, StoreError, User};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::html::escape;
use crate::notify::links::{LinkClaim, LinkError};
use crate::notify::LinkAction;

/// `GET /links/{token}`: what the link would do, and a button to do it.
pub async fn show_link(
    State(state): State<AppState>,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let now = state.clock.now_ms();
    let target = match load(&state, token, now).await {
        Ok(target) => target,
        Err(page) => return page.into_response(),
    };
    let Target {
        claim, incident, ..
    } = &target;
    let verb = verb(claim.action);
    let done = match (claim.action, incident.state.as_str()) {
        (_, "resolved") => Some("resolved"),
        (LinkAction::Acknowledge, "acknowledged") => Some("acknowledged"),
        _ => None,
    };
    if let Some(already) = done {
        return Page {
            title: format!("Already {already}"),
            lead: format!("This incident is {already} already: there is nothing to {verb}."),
            ..Page::new(StatusCode::OK, Tone::Done, "No action needed")
        }
        .with(&target)
        .into_response();
    }
    let lead = match claim.action {
        LinkAction::Acknowledge => format!(
            "You are acknowledging as {} ({}). Escalation stops until the incident is resolved or triggers again.",
            target.user.name, target.user.email
        ),
        LinkAction::Resolve => format!(
            "You are resolving as {} ({}). Paging stops for everyone; do this once the problem is fixed.",
            target.user.name, target.user.email
        ),
    };
    Page {
        title: format!("{} this incident?", capitalised(verb)),
        lead,
        button: Some(claim.action),
        foot: Some(format!(
            "This link works once, until {}.",
            utc(claim.expires_at)
        )),
        ..Page::new(StatusCode::OK, Tone::Ask, "Confirm")
    }
    .with(&target)
    .into_response()
}

/// `POST /links/{token}`: uses the link and acts on the incident.
pub async fn use_link(
    State(state): State<AppState>,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let now = state.clock.now_ms();
    let target = match load(&state, token, now).await {
        Ok(target) => target,
        Err(page) => return page.into_response(),
    };
    let claim = &target.claim;
    match state
        .store
        .use_link(&claim.use_id(), claim.expires_at, now)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return Page {
                lead: "Each link works once. The incident stands as shown below.".into(),
                ..Page::new(StatusCode::GONE, Tone::Warn, "Nothing changed")
                    .titled("This link was already used")
            }
            .with(&target)
            .into_response()
        }
        Err(err) => return store_failure(err).into_response(),
    }
    let outcome = state
        .store
        .act_on_incident(
            &claim.account_id,
            &claim.incident_id,
            claim.incident_action(),
            &Actor::User(claim.user_id.clone()),
            now,
        )
        .await;
    let past = past(claim.action);
    let (page, incident) = match outcome {
        Ok(ActOutcome::Changed(incident)) => {
            tracing::info!(incident = %incident.id, user = %claim.user_id, action = claim.action.as_str(), "answered by link");
            let lead = match claim.action {
                LinkAction::Acknowledge => {
                    "Escalation has stopped. Resolve the incident once the problem is fixed."
                }
                LinkAction::Resolve => "Paging has stopped for everyone.",
            };
            (
                Page {
                    lead: lead.into(),
                    ..Page::new(StatusCode::OK, Tone::Done, "Done")
                        .titled(&format!("Incident {past}"))
                },
                incident,
            )
        }
        Ok(ActOutcome::Unchanged(incident)) => (
            Page {
                lead: format!("Someone got there first: the incident was {past} already."),
                ..Page::new(StatusCode::OK, Tone::Done, "No action needed")
                    .titled(&format!("Already {past}"))
            },
            incident,
        ),
        Err(StoreError::Transition(refused)) => {
            let state_now = refused.from.as_str();
            (
                Page {
                    lead: format!(
                        "This incident was {state_now} before you answered: nothing changed."
                    ),
                    ..Page::new(StatusCode::CONFLICT, Tone::Warn, "Nothing changed")
                        .titled(&format!("Already {state_now}"))
                },
                Incident {
                    state: state_now.to_owned(),
                    ..target.incident.clone()
                },
            )
        }
        Err(StoreError::NotFound) => return incident_gone().into_response(),
        Err(err) => return store_failure(err).into_response(),
    };
    page.with(&Target { incident, ..target }).into_response()
}

/// A verified link with the user and incident it is for.
struct Target {
    claim: LinkClaim,
    user: User,
    incident: Incident,
    service_name: String,
}

/// Verifies `token` and loads what it points at, or the page saying why
/// it cannot be used.
async fn load(
    state: &AppState,
    token: Result<Path<String>, PathRejection>,
    now: Millis,
) -> Result<Target, Page> {
    let Ok(Path(token)) = token else {
        return Err(invalid());
    };
    let claim = match state.links.verify(&token, now) {
        Ok(claim) => claim,
        Err(LinkError::Invalid) => return Err(invalid()),
        Err(LinkError::Expired) => return Err(Page {
            lead: "Answer links work for a day after the page. Open Klaxon to act on the incident."
                .into(),
            ..Page::new(StatusCode::GONE, Tone::Error, "Expired").titled("This link has expired")
        }),
    };
    let store = &state.store;
    let user = match store.get_user(&claim.account_id, &claim.user_id).await {
        Ok(user) => user,
        Err(StoreError::NotFound) => {
            return Err(Page {
                lead: "The person it was sent to no longer has an account here.".into(),
                ..Page::new(StatusCode::NOT_FOUND, Tone::Error, "Invalid")
                    .titled("This link is no longer valid")
            })
        }
        Err(err) => return Err(store_failure(err)),
    };
    if !Role::parse(&user.role).is_some_and(Role::can_respond) {
        return Err(Page {
            lead: format!(
                "{} is an observer: observers see incidents but cannot acknowledge or resolve them.",
                user.name
            ),
            ..Page::new(StatusCode::FORBIDDEN, Tone::Error, "Not allowed")
                .titled("You cannot act on incidents")
        });
    }
    let incident = match store
        .get_incident(&claim.account_id, &claim.incident_id)
        .await
    {
        Ok(incident) => incident,
        Err(StoreError::NotFound) => return Err(incident_gone()),
        Err(err) => return Err(store_failure(err)),
    };
    let service_name = match store
        .get_service(&claim.account_id, &incident.service_id)
        .await
    {
        Ok(service) => service.name,
        Err(_) => incident.service_id.clone(),
    };
    Ok(Target {
        claim,
        user,
        incident,
        service_name,
    })
}

fn invalid() -> Page {
    Page {
        lead: "It may have been cut short when it was copied, or it was not made by this Klaxon server."
            .into(),
        ..Page::new(StatusCode::NOT_FOUND, Tone::Error, "Invalid")
            .titled("This link is not valid")
    }
}

fn incident_gone() -> Page {
    Page {
        lead: "This incident no longer exists: it may have been deleted.".into(),
        ..Page::new(StatusCode::NOT_FOUND, Tone::Error, "Not found").titled("Incident not found")
    }
}

fn store_failure(err: StoreError) -> Page {
    if err.is_unavailable() {
        tracing::warn!(error = %err, "answer link: database unavailable");
        Page {
            lead: "Klaxon cannot reach its database right now. Try again in a moment: the link still works."
                .into(),
            ..Page::new(StatusCode::SERVICE_UNAVAILABLE, Tone::Error, "Try again")
                .titled("Klaxon is unavailable")
        }
    } else {
        tracing::error!(error = ?err, "answer link failed");
        Page {
            lead: "The error has been logged. Open Klaxon to act on the incident.".into(),
            ..Page::new(StatusCode::INTERNAL_SERVER_ERROR, Tone::Error, "Error")
                .titled("Something went wrong")
        }
    }
}

fn verb(action: LinkAction) -> &'static str {
    match action {
        LinkAction::Acknowledge => "acknowledge",
        LinkAction::Resolve => "resolve",
    }
}

fn past(action: LinkAction) -> &'static str {
    match action {
        LinkAction::Acknowledge => "acknowledged",
        LinkAction::Resolve => "resolved",
    }
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `2026-01-05 09:00 UTC`.
fn utc(ms: Millis) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| "its expiry".to_owned())
}

// ---------------------------------------------------------------------
// The page.

/// The pill over the heading.
#[derive(Clone, Copy)]
enum Tone {
    /// A question to confirm.
    Ask,
    /// It worked, or there was nothing to do.
    Done,
    /// Nothing changed.
    Warn,
    /// The link cannot be used.
    Error,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Ask => "ask",
            Tone::Done => "done",
            Tone::Warn => "warn",
            Tone::Error => "error",
        }
    }
}

/// What one page says. Every string is plain text, escaped on rendering.
struct Page {
    status: StatusCode,
    tone: Tone,
    pill: &'static str,
    title: String,
    lead: String,
    /// Service name, message, state, id.
    incident: Option<(String, String, String, String)>,
    /// The button posting back, for a question.
    button: Option<LinkAction>,
    foot: Option<String>,
}

impl Page {
    fn new(status: StatusCode, tone: Tone, pill: &'static str) -> Self {
        Page {
            status,
            tone,
            pill,
            title: String::new(),
            lead: String::new(),
            incident: None,
            button: None,
            foot: None,
        }
    }

    fn titled(self, title: &str) -> Self {
        Page {
            title: title.to_owned(),
            ..self
        }
    }

    /// Shows `target`'s incident.
    fn with(self, target: &Target) -> Self {
        let i = &target.incident;
        Page {
            incident: Some((
                target.service_name.clone(),
                i.message.clone(),
                i.state.clone(),
                i.id.clone(),
            )),
            ..self
        }
    }

    fn html(&self) -> String {
        let mut body = String::with_capacity(2048);
        body.push_str(&format!(
            "<p class=\"pill\">{}</p>\n<h1>{}</h1>\n<p class=\"lead\">{}</p>\n",
            escape(self.pill),
            escape(&self.title),
            escape(&self.lead)
        ));
        if let Some((service, message, state, id)) = &self.incident {
            let state_class = match state.as_str() {
                "triggered" | "acknowledged" | "resolved" => state.as_str(),
                _ => "other",
            };
            body.push_str(&format!(
                "<div class=\"incident\">\n<p class=\"service\">{}</p>\n<p class=\"message\">{}</p>\n<p class=\"meta\"><span class=\"state {state_class}\">{}</span> <span class=\"id\">{}</span></p>\n</div>\n",
                escape(service),
                escape(&crate::html::one_line(message)),
                escape(state),
                escape(id),
            ));
        }
        if let Some(action) = self.button {
            body.push_str(&format!(
                "<form method=\"post\"><button type=\"submit\" class=\"{}\">{} incident</button></form>\n",
                verb(action),
                capitalised(verb(action))
            ));
        }
        if let Some(foot) = &self.foot {
            body.push_str(&format!("<p class=\"foot\">{}</p>\n", escape(foot)));
        }
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<meta name=\"robots\" content=\"noindex, nofollow\">\n<meta name=\"referrer\" content=\"no-referrer\">\n<title>{} · Klaxon</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n<p class=\"brand\">Klaxon</p>\n<section class=\"card {}\">\n{body}</section>\n</main>\n</body>\n</html>\n",
            escape(&self.title),
            self.tone.class(),
        )
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.html()).into_response();
        let headers = response.headers_mut();
        let fixed = [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ];
        for (name, value) in fixed {
            headers.insert(name, HeaderValue::from_static(value));
        }
        headers.insert(
            header::HeaderName::from_static("x-robots-tag"),
            HeaderValue::from_static("noindex, nofollow"),
        );
        if let Ok(csp) = HeaderValue::from_str(&CSP) {
            headers.insert(header::CONTENT_SECURITY_POLICY, csp);
        }
        response
    }
}

/// Nothing but the page's own stylesheet (by hash) and its form posting
/// back here.
static CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = STANDARD.encode(Sha256::digest(CSS.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
});

const CSS: &str = "\
*{box-sizing:border-box}\
body{margin:0;background:#f3f4f6;color:#111827;font:16px/1.5 -apple-system,BlinkMacSystemFont,'Segoe UI',Roboto,Helvetica,Arial,sans-serif}\
main{max-width:30rem;margin:0 auto;padding:3rem 1rem}\
.brand{margin:0 0 1rem;font-weight:700;font-size:1.125rem;letter-spacing:.02em;color:#374151}\
.card{background:#fff;border:1px solid #e5e7eb;border-radius:.75rem;padding:1.5rem;box-shadow:0 1px 3px rgba(0,0,0,.06)}\
.card>:last-child{margin-bottom:0}\
.pill{display:inline-block;margin:0 0 .75rem;padding:.125rem .625rem;border-radius:999px;font-size:.8125rem;font-weight:600}\
.ask .pill{background:#dbeafe;color:#1e40af}\
.done .pill{background:#dcfce7;color:#166534}\
.warn .pill{background:#fef3c7;color:#92400e}\
.error .pill{background:#fee2e2;color:#991b1b}\
h1{margin:0 0 .5rem;font-size:1.375rem;line-height:1.3}\
.lead{margin:0 0 1.25rem;color:#4b5563}\
.incident{margin:0 0 1.25rem;padding:1rem;background:#f9fafb;border:1px solid #e5e7eb;border-radius:.5rem}\
.service{margin:0;font-size:.8125rem;color:#6b7280}\
.message{margin:.125rem 0 .5rem;font-weight:600;overflow-wrap:anywhere}\
.meta{margin:0;font-size:.8125rem;color:#6b7280}\
.state{display:inline-block;margin-right:.375rem;padding:0 .5rem;border-radius:999px;font-size:.75rem;font-weight:600;text-transform:uppercase;letter-spacing:.04em;background:#e5e7eb;color:#374151}\
.state.triggered{background:#fee2e2;color:#991b1b}\
.state.acknowledged{background:#fef3c7;color:#92400e}\
.state.resolved{background:#dcfce7;color:#166534}\
.id{font-family:SFMono-Regular,Menlo,Consolas,monospace}\
form{margin:0}\
button{display:block;width:100%;padding:.75rem 1rem;border:0;border-radius:.5rem;font:inherit;font-weight:600;color:#fff;cursor:pointer}\
button.acknowledge{background:#1d4ed8}\
button.resolve{background:#15803d}\
button:hover{filter:brightness(1.1)}\
button:focus-visible{outline:3px solid #93c5fd;outline-offset:2px}\
.foot{margin:1rem 0 0;font-size:.8125rem;color:#6b7280}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show_and_carry_the_headers() {
        let page = Page {
            lead: "<b>lead</b>".into(),
            incident: Some((
                "<svc>".into(),
                "<script>x</script>\r\nmore".into(),
                "<state>".into(),
                "inc\"x".into(),
            )),
            button: Some(LinkAction::Resolve),
            ..Page::new(StatusCode::OK, Tone::Ask, "Confirm").titled("<title>")
        };
        let html = page.html();
        for raw in ["<b>", "<svc>", "<script>", "<state>", "inc\"x", "<title> ·"] {
            assert!(!html.contains(raw), "{raw} in {html}");
        }
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt; more"));
        assert!(html.contains("<form method=\"post\"><button type=\"submit\" class=\"resolve\">Resolve incident</button></form>"));
        let response = page.into_response();
        let h = response.headers();
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(h["x-robots-tag"], "noindex, nofollow");
        assert!(h[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|v| v.starts_with("text/html")));
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap_or("");
        assert!(
            csp.starts_with("default-src 'none'; style-src 'sha256-"),
            "{csp}"
        );
    }

    #[test]
    fn the_stylesheet_hash_matches_the_stylesheet() {
        let expected = STANDARD.encode(Sha256::digest(CSS.as_bytes()));
        assert!(CSP.contains(&expected));
        // The page carries exactly this stylesheet: no whitespace added.
        let html = Page::new(StatusCode::OK, Tone::Done, "Done").html();
        assert!(html.contains(&format!("<style>{CSS}</style>")));
    }

    #[test]
    fn expiry_is_shown_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(Millis::MAX), "its expiry");
    }
}
