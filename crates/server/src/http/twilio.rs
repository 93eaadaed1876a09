//! Twilio's webhooks: SMS replies (`POST /sms`), the TwiML of a paging
//! call and its key presses (`POST /voice`, `POST /voice/receive`), and
//! delivery reports (`POST /twilio/status`).
//!
//! None of these carries an API token. Each must carry Twilio's
//! `X-Twilio-Signature` over `KLAXON_PUBLIC_URL` + the request's path and
//! query + its form parameters ([`Signed`]); without a valid one the
//! answer is 403 and nothing happens. With Twilio not configured the paths
//! do not exist (404).
//!
//! Whoever answers is identified by what Twilio signed: the number an SMS
//! came from (a user's SMS or phone contact), or the outbox message a call
//! was made for. Acting on incidents then goes through the same store call
//! as the API, in the user's account, with the user as the audit actor.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use klaxon_core::contact::{ContactType, E164};
use klaxon_core::incident::IncidentAction;
use klaxon_core::notify::sms::cut_to_one_segment;
use klaxon_core::{PublicId, Role};
use klaxon_store::{ActOutcome, Actor, ContactOwner, DeliveryReport, OutgoingMessage, StoreError};

use super::error::ApiError;
use super::twiml::{escape, twiml};
use crate::app::AppState;
use crate::notify::twilio::one_line;

pub use super::twilio_signature::{signature, Signed};

/// What an SMS reply asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `4`, `6` or `8`, alone (every incident assigned to the user) or
    /// with an incident id.
    Act(IncidentAction, Option<String>),
    /// Anything else.
    Help,
}

/// Reads an SMS reply: `4` acknowledges, `6` resolves, `8` escalates;
/// `4 <id>` (or `4 #<id>`) names one incident.
pub fn parse_command(body: &str) -> Command {
    let mut words = body.split_whitespace();
    let action = match words.next() {
        Some("4") => IncidentAction::Acknowledge,
        Some("6") => IncidentAction::Resolve,
        Some("8") => IncidentAction::Escalate,
        _ => return Command::Help,
    };
    let target = words.next().map(|w| w.trim_start_matches('#').to_owned());
    if words.next().is_some() {
        return Command::Help;
    }
    Command::Act(action, target)
}

/// The reply to anything that is not a command.
pub const HELP: &str = "Klaxon: reply 4 to acknowledge, 6 to resolve or 8 to escalate your \
open incidents; 4 <id>, 6 <id> or 8 <id> for one incident.";

/// The reply to a number no user has as a contact.
pub const UNKNOWN_NUMBER: &str =
    "Klaxon does not know this number: add it to your contacts to answer pages by text.";

/// The reply to a number only observers have.
pub const OBSERVERS_ONLY: &str = "Klaxon: observers may not act on incidents.";

/// How an action reads in replies: the verb, and its past tense.
fn words(action: IncidentAction) -> (&'static str, &'static str) {
    match action {
        IncidentAction::Acknowledge => ("acknowledge", "Acknowledged"),
        IncidentAction::Resolve => ("resolve", "Resolved"),
        IncidentAction::Escalate => ("escalate", "Escalated"),
        IncidentAction::Trigger => ("trigger", "Triggered"),
    }
}

/// `POST /sms`: a text to Klaxon's number. Answers with a text saying what
/// was done.
pub async fn receive_sms(State(state): State<AppState>, request: Signed) -> Response {
    let from = request.field("From").unwrap_or_default();
    let body = request.field("Body").unwrap_or_default();
    let reply = match answer_sms(&state, from, body).await {
        Ok(reply) => reply,
        Err(err) => return ApiError::from(err).into_response(),
    };
    twiml(&format!(
        "<Message>{}</Message>",
        escape(&cut_to_one_segment(&reply))
    ))
}

/// What an SMS from `from` saying `body` does, and the reply.
async fn answer_sms(state: &AppState, from: &str, body: &str) -> Result<String, StoreError> {
    let Command::Act(action, target) = parse_command(body) else {
        return Ok(HELP.to_owned());
    };
    let Ok(number) = E164::parse(from) else {
        return Ok(UNKNOWN_NUMBER.to_owned());
    };
    let owners = state
        .store
        .users_by_contact_address(number.as_str(), &[ContactType::Sms, ContactType::Phone])
        .await?;
    if owners.is_empty() {
        return Ok(UNKNOWN_NUMBER.to_owned());
    }
    let responders: Vec<&ContactOwner> = owners
        .iter()
        .filter(|o| Role::parse(&o.role).is_some_and(Role::can_respond))
        .collect();
    if responders.is_empty() {
        return Ok(OBSERVERS_ONLY.to_owned());
    }
    match target {
        Some(id) => act_on_one(state, &responders, action, &id).await,
        None => act_on_assigned(state, &responders, action).await,
    }
}

/// `4 <id>`: the incident `id`, in whichever of the number's accounts has
/// it.
async fn act_on_one(
    state: &AppState,
    responders: &[&ContactOwner],
    action: IncidentAction,
    id: &str,
) -> Result<String, StoreError> {
    let (verb, done) = words(action);
    let Some(id) = PublicId::parse(id) else {
        return Ok(format!("Klaxon: no incident {}.", one_line(id)));
    };
    let id = id.as_str();
    for owner in responders {
        let outcome = state
            .store
            .act_on_incident(
                &owner.account_id,
                id,
                action,
                &Actor::User(owner.user_id.clone()),
                state.clock.now_ms(),
            )
            .await;
        let reply = match outcome {
            // Not this account's: perhaps the next one's.
            Err(StoreError::NotFound) => continue,
            Ok(ActOutcome::Changed(incident)) => {
                format!("{done} incident {id}: {}", one_line(&incident.message))
            }
            Ok(ActOutcome::Unchanged(incident)) => {
                format!("Incident {id} is {} already.", incident.state)
            }
            Err(StoreError::Transition(e)) => {
                format!("Cannot {verb} incident {id}: it is {}.", e.from.as_str())
            }
            Err(err) => return Err(err),
        };
        return Ok(reply);
    }
    Ok(format!("Klaxon: no incident {id}."))
}

/// `4`: every unresolved incident assigned to the user, in each account
/// the number belongs to.
async fn act_on_assigned(
    state: &AppState,
    responders: &[&ContactOwner],
    action: IncidentAction,
) -> Result<String, StoreError> {
    let (verb, done) = words(action);
    let (mut changed, mut failed) = (0usize, 0usize);
    for owner in responders {
        let incidents = state
            .store
            .open_incidents_assigned_to(&owner.account_id, &owner.user_id)
            .await?;
        let actor = Actor::User(owner.user_id.clone());
        for incident in incidents {
            let outcome = state
                .store
                .act_on_incident(
                    &owner.account_id,
                    &incident.id,
                    action,
                    &actor,
                    state.clock.now_ms(),
                )
                .await;
            match outcome {
                Ok(ActOutcome::Changed(_)) => changed += 1,
                // Acknowledging one that is acknowledged already; or one
                // resolved or deleted since it was listed.
                Ok(ActOutcome::Unchanged(_))
                | Err(StoreError::Transition(_))
                | Err(StoreError::NotFound) => {}
                Err(err) => {
                    tracing::error!(incident = %incident.id, error = %err, "SMS reply could not act on an incident");
                    failed += 1;
                }
            }
        }
    }
    let mut reply = match changed {
        0 => format!("Klaxon: no incidents to {verb}."),
        1 => format!("{done} 1 incident"),
        n => format!("{done} {n} incidents"),
    };
    if failed > 0 {
        reply.push_str(&format!(
            "; {failed} could not be changed, please try again"
        ));
    }
    Ok(reply)
}

/// The outbox message a call is about (`?message=<id>`), if it exists.
async fn called_for(
    state: &AppState,
    request: &Signed,
) -> Result<Option<OutgoingMessage>, ApiError> {
    let Some(id) = request.query("message").and_then(PublicId::parse) else {
        return Ok(None);
    };
    Ok(state.store.outgoing_message(id.as_str()).await?)
}

/// Longest alert text read out (Twilio's `<Say>` takes 4,096 characters).
const SAY_MAX: usize = 600;

/// An alert as read out: `service` and `message` on one line, cut short.
fn spoken(text: &str) -> String {
    let text = one_line(text);
    match text.char_indices().nth(SAY_MAX) {
        Some((at, _)) => text[..at].to_owned(),
        None => text,
    }
}

/// The key-press prompt, answered at `/voice/receive`.
fn gather(state: &AppState, message_id: &str, before: &str) -> String {
    let action = format!(
        "{}/voice/receive?message={message_id}",
        state.config.public_url
    );
    format!(
        "<Gather numDigits=\"1\" method=\"POST\" action=\"{}\">{before}\
         <Say>Press 4 to acknowledge, 6 to resolve, 8 to escalate.</Say></Gather>\
         <Say>No key was pressed. Goodbye.</Say>",
        escape(&action)
    )
}

/// TwiML for a call about something that is gone.
fn gone() -> Response {
    twiml("<Say>This Klaxon alert is no longer available. Goodbye.</Say><Hangup/>")
}

/// `POST /voice?message=<id>`: what a paging call says: the alert, and
/// which key does what.
pub async fn show_voice(State(state): State<AppState>, request: Signed) -> Response {
    let message = match called_for(&state, &request).await {
        Ok(Some(message)) => message,
        Ok(None) => return gone(),
        Err(err) => return err.into_response(),
    };
    let alert = format!(
        "Service {}. {}.",
        spoken(&message.service_name),
        spoken(&message.message)
    );
    if message.is_status_update() {
        let what = match message.reason.as_str() {
            "acknowledged" => "was acknowledged",
            "resolved" => "was resolved",
            _ => "was escalated to someone else",
        };
        return twiml(&format!(
            "<Say>Klaxon update: this incident {what}. {}</Say><Hangup/>",
            escape(&alert)
        ));
    }
    let intro = match message.incident_state.as_str() {
        "resolved" => {
            return twiml(&format!(
                "<Say>Klaxon alert. {} It has been resolved. Goodbye.</Say><Hangup/>",
                escape(&alert)
            ))
        }
        "acknowledged" => format!(
            "<Say>Klaxon alert. {} It is acknowledged.</Say>",
            escape(&alert)
        ),
        _ => format!("<Say>Klaxon alert. {}</Say>", escape(&alert)),
    };
    twiml(&gather(&state, &message.id, &intro))
}

/// `POST /voice/receive?message=<id>`: a key pressed during the call. 4,
/// 6 and 8 act on the message's incident as the user called; any other
/// key asks again.
pub async fn receive_voice_key(State(state): State<AppState>, request: Signed) -> Response {
    let message = match called_for(&state, &request).await {
        Ok(Some(message)) => message,
        Ok(None) => return gone(),
        Err(err) => return err.into_response(),
    };
    let action = match request.field("Digits").map(str::trim) {
        Some("4") => IncidentAction::Acknowledge,
        Some("6") => IncidentAction::Resolve,
        Some("8") => IncidentAction::Escalate,
        _ => {
            return twiml(&gather(
                &state,
                &message.id,
                "<Say>Sorry, that key does nothing.</Say>",
            ))
        }
    };
    match act_by_call(&state, &message, action).await {
        Ok(said) => twiml(&format!("<Say>{}</Say><Hangup/>", escape(&said))),
        Err(err) => ApiError::from(err).into_response(),
    }
}

/// Acts on a called user's behalf; what to tell them.
async fn act_by_call(
    state: &AppState,
    message: &OutgoingMessage,
    action: IncidentAction,
) -> Result<String, StoreError> {
    let (verb, done) = words(action);
    let user = match state
        .store
        .get_user(&message.account_id, &message.user_id)
        .await
    {
        Ok(user) => user,
        Err(StoreError::NotFound) => {
            return Ok("This alert is no longer available. Goodbye.".into())
        }
        Err(err) => return Err(err),
    };
    if !Role::parse(&user.role).is_some_and(Role::can_respond) {
        return Ok("Observers may not act on incidents. Goodbye.".into());
    }
    let outcome = state
        .store
        .act_on_incident(
            &message.account_id,
            &message.incident_id,
            action,
            &Actor::User(message.user_id.clone()),
            state.clock.now_ms(),
        )
        .await;
    Ok(match outcome {
        Ok(ActOutcome::Changed(_)) => format!("{done}. Goodbye."),
        Ok(ActOutcome::Unchanged(incident)) => {
            format!("The incident is {} already. Goodbye.", incident.state)
        }
        Err(StoreError::Transition(e)) => format!(
            "Cannot {verb}: the incident is {}. Goodbye.",
            e.from.as_str()
        ),
        Err(StoreError::NotFound) => "This alert is no longer available. Goodbye.".into(),
        Err(err) => return Err(err),
    })
}

/// What a Twilio status means for the message, if anything yet: its last
/// word on a text (`delivered`, `undelivered`, `failed`) or a call
/// (`completed`, or `busy`, `no-answer`, `canceled`, `failed`).
pub fn delivery_report(status: &str, error_code: Option<&str>) -> Option<DeliveryReport> {
    match status {
        "delivered" | "completed" => Some(DeliveryReport::Delivered),
        "failed" | "undelivered" | "busy" | "no-answer" | "canceled" => {
            let mut error = format!("Twilio reported {status}");
            if let Some(code) = error_code.map(str::trim).filter(|c| !c.is_empty()) {
                error.push_str(&format!(" (error {})", one_line(code)));
            }
            Some(DeliveryReport::Failed { error })
        }
        _ => None,
    }
}

/// `POST /twilio/status`: Twilio's report on a text or call it took.
/// An unknown id or an interim status changes nothing.
pub async fn receive_status(State(state): State<AppState>, request: Signed) -> Response {
    let (sid, status) = match (
        request.field("MessageSid").or(request.field("SmsSid")),
        request.field("CallSid"),
    ) {
        (Some(sid), _) => (
            sid,
            request
                .field("MessageStatus")
                .or(request.field("SmsStatus")),
        ),
        (None, Some(sid)) => (sid, request.field("CallStatus")),
        (None, None) => return twiml(""),
    };
    // Twilio's ids are 34 letters and digits; anything else names nothing
    // that was sent.
    if sid.is_empty() || sid.len() > 64 || !sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return twiml("");
    }
    let Some(report) = status.and_then(|s| delivery_report(s, request.field("ErrorCode"))) else {
        return twiml("");
    };
    match state
        .store
        .report_delivery(sid, &report, state.clock.now_ms())
        .await
    {
        Ok(changed) => {
            tracing::debug!(sid, ?report, changed, "Twilio delivery report");
            twiml("")
        }
        Err(err) => ApiError::from(err).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        use IncidentAction as A;
        for (body, want) in [
            ("4", Command::Act(A::Acknowledge, None)),
            (" 6 ", Command::Act(A::Resolve, None)),
            ("8\n", Command::Act(A::Escalate, None)),
            (
                "4 Ab3dEf9h",
                Command::Act(A::Acknowledge, Some("Ab3dEf9h".into())),
            ),
            (
                "6 #Ab3dEf9h",
                Command::Act(A::Resolve, Some("Ab3dEf9h".into())),
            ),
            ("4 a b", Command::Help),
            ("44", Command::Help),
            ("ack", Command::Help),
            ("", Command::Help),
            ("5", Command::Help),
        ] {
            assert_eq!(parse_command(body), want, "{body:?}");
        }
    }

    #[test]
    fn replies_fit_one_text() {
        for text in [HELP, UNKNOWN_NUMBER, OBSERVERS_ONLY] {
            assert!(klaxon_core::notify::sms::fits_one_segment(text), "{text}");
        }
    }

    #[test]
    fn final_statuses_are_reports() {
        assert_eq!(
            delivery_report("delivered", None),
            Some(DeliveryReport::Delivered)
        );
        assert_eq!(
            delivery_report("completed", Some("")),
            Some(DeliveryReport::Delivered)
        );
        assert_eq!(
            delivery_report("undelivered", Some("30003")),
            Some(DeliveryReport::Failed {
                error: "Twilio reported undelivered (error 30003)".into()
            })
        );
        for status in ["failed", "busy", "no-answer", "canceled"] {
            assert_eq!(
                delivery_report(status, None),
                Some(DeliveryReport::Failed {
                    error: format!("Twilio reported {status}")
                })
            );
        }
        for interim in [
            "queued",
            "sending",
            "sent",
            "ringing",
            "in-progress",
            "",
            "bogus",
        ] {
            assert_eq!(delivery_report(interim, None), None, "{interim}");
        }
    }

    #[test]
    fn spoken_text_is_one_line_and_bounded() {
        assert_eq!(spoken("disk\n\tfull "), "disk full");
        assert_eq!(spoken(&"é".repeat(1000)).chars().count(), SAY_MAX);
    }
}
