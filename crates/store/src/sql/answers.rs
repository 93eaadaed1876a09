//! Answers from the channels pages go out on, for both backends: who
//! replied from a number, which incidents they can answer for, the message
//! a phone call is about, and providers' delivery reports.
//!
//! These lookups cross accounts: a provider's callback carries a phone
//! number, a message id or the provider's own id, not an account. The
//! caller authenticates the callback (Twilio's request signature) before
//! asking; whatever it then does to incidents goes through
//! [`crate::IncidentStore::act_on_incident`] in the account found here.

use async_trait::async_trait;
use klaxon_core::contact::ContactType;
use klaxon_core::time::Millis;

use super::incidents::incident_select;
use super::row::from_row;
use super::{query, Backend, Db};
use crate::{AnswerStore, ContactOwner, DeliveryReport, Incident, OutgoingMessage, Result};

from_row!(ContactOwner {
    account_id,
    user_id,
    role,
});

#[async_trait]
impl<B: Backend> AnswerStore for B {
    async fn users_by_contact_address(
        &self,
        address: &str,
        kinds: &[ContactType],
    ) -> Result<Vec<ContactOwner>> {
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let kinds: Vec<&'static str> = kinds.iter().map(|k| k.as_str()).collect();
        let mut q = query(
            "SELECT c.account_id, c.user_id, u.role FROM contacts c
             JOIN users u ON u.id = c.user_id
             WHERE c.address = $1 AND c.type IN ",
        )
        .bind(address);
        q.push_list(&kinds)
            .push(r#" ORDER BY c.created_at, c.id COLLATE "C""#);
        let rows: Vec<ContactOwner> = self.read().await?.fetch_all(q).await?;
        // One user may have the number twice (as SMS and phone contacts).
        let mut owners: Vec<ContactOwner> = Vec::with_capacity(rows.len());
        for row in rows {
            if !owners
                .iter()
                .any(|o| o.account_id == row.account_id && o.user_id == row.user_id)
            {
                owners.push(row);
            }
        }
        Ok(owners)
    }

    async fn open_incidents_assigned_to(
        &self,
        account_id: &str,
        user_id: &str,
    ) -> Result<Vec<Incident>> {
        self.read()
            .await?
            .fetch_all(
                query(concat!(
                    incident_select!(),
                    r#" WHERE i.account_id = $1 AND i.current_user_id = $2
                        AND i.state <> 'resolved'
                     ORDER BY i.triggered_at, i.id COLLATE "C""#
                ))
                .bind(account_id)
                .bind(user_id),
            )
            .await
    }

    async fn outgoing_message(&self, id: &str) -> Result<Option<OutgoingMessage>> {
        self.read()
            .await?
            .fetch_optional(
                query(
                    "SELECT o.id, o.account_id, o.incident_id, o.user_id, o.contact_id, o.reason,
                        o.channel, o.address, o.attempts, o.page_at, s.name AS service_name,
                        i.message, i.description, i.details, i.state AS incident_state
                     FROM outbox o JOIN incidents i ON i.id = o.incident_id
                     JOIN services s ON s.id = i.service_id WHERE o.id = $1",
                )
                .bind(id),
            )
            .await
    }

    async fn report_delivery(
        &self,
        provider_id: &str,
        report: &DeliveryReport,
        now: Millis,
    ) -> Result<u64> {
        use super::Write;
        let (status, error) = match report {
            DeliveryReport::Delivered => ("delivered", None),
            DeliveryReport::Failed { error } => ("failed", Some(error.as_str())),
        };
        let mut tx = self.write().await?;
        // Only a message the provider took can be delivered or lost; a
        // late or repeated report does not move one that is settled.
        let changed = tx
            .execute(
                query(
                    "UPDATE outbox SET status = $1, error = $2, updated_at = $3
                     WHERE provider_id = $4 AND status = 'sent'",
                )
                .bind(status)
                .bind(&error)
                .bind(&now)
                .bind(provider_id),
            )
            .await?;
        tx.commit().await?;
        Ok(changed)
    }
}
