//! Signed one-click answer links: "acknowledge" and "resolve" buttons in
//! email, Slack and ntfy messages.
//!
//! A link carries who may do what to which incident and until when, and
//! an HMAC-SHA256 over all of it with a key every process sharing the
//! database has (made once, kept in the store). Nothing else is needed to
//! check one: a forged or altered link fails the MAC, an old one its
//! expiry. Each link works once: using it records its id in the store
//! first, and a second use is refused.
//!
//! The token is `base64url(payload) "." base64url(mac)`, with the payload
//! `v1|account|incident|user|message|a-or-r|expires_ms`.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use klaxon_core::time::{Millis, DAY_MS};
use klaxon_core::IncidentAction;
use klaxon_store::{OutgoingMessage, Store};
use sha2::Sha256;

use super::{LinkAction, Links};

/// How long a link works after the message is sent.
pub const LINK_TTL_MS: Millis = DAY_MS;

/// The store's name for the signing key.
const SECRET_NAME: &str = "answer_links_v1";

/// Bytes of MAC kept (128 bits).
const MAC_LEN: usize = 16;

/// What a valid link lets its holder do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClaim {
    /// The incident's account.
    pub account_id: String,
    /// The incident.
    pub incident_id: String,
    /// The user the message went to, who acts.
    pub user_id: String,
    /// The message the link was in.
    pub message_id: String,
    /// What it does.
    pub action: LinkAction,
    /// When it stops working.
    pub expires_at: Millis,
}

impl LinkClaim {
    /// The id recorded when the link is used: one per message and action.
    pub fn use_id(&self) -> String {
        format!("{}:{}", self.message_id, self.action.as_str())
    }

    /// The incident action it applies.
    pub fn incident_action(&self) -> IncidentAction {
        match self.action {
            LinkAction::Acknowledge => IncidentAction::Acknowledge,
            LinkAction::Resolve => IncidentAction::Resolve,
        }
    }
}

/// Why a link is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// Not a link this server made (malformed, forged or altered).
    Invalid,
    /// Past its expiry.
    Expired,
}

/// Makes and checks links.
#[derive(Clone)]
pub struct Signer {
    key: Arc<[u8]>,
    public_url: Arc<str>,
}

impl Signer {
    /// A signer with `key`, making links under `public_url`.
    pub fn new(key: &[u8], public_url: &str) -> Self {
        Self {
            key: key.into(),
            public_url: public_url.trim_end_matches('/').into(),
        }
    }

    /// The signer with the key shared through `store` (made on first use).
    pub async fn load(
        store: &dyn Store,
        public_url: &str,
        now: Millis,
    ) -> klaxon_store::Result<Self> {
        let fresh = klaxon_core::id::random_hex(&mut rand::rng(), 32);
        let key = store.secret(SECRET_NAME, &fresh, now).await?;
        Ok(Self::new(key.as_bytes(), public_url))
    }

    /// The token for `claim`.
    pub fn token(&self, claim: &LinkClaim) -> String {
        let payload = format!(
            "v1|{}|{}|{}|{}|{}|{}",
            claim.account_id,
            claim.incident_id,
            claim.user_id,
            claim.message_id,
            match claim.action {
                LinkAction::Acknowledge => "a",
                LinkAction::Resolve => "r",
            },
            claim.expires_at
        );
        let mac = self.mac(payload.as_bytes());
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(&mac[..MAC_LEN])
        )
    }

    /// What `token` allows at `now`.
    pub fn verify(&self, token: &str, now: Millis) -> Result<LinkClaim, LinkError> {
        let (payload, mac) = token.split_once('.').ok_or(LinkError::Invalid)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| LinkError::Invalid)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| LinkError::Invalid)?;
        if mac.len() != MAC_LEN {
            return Err(LinkError::Invalid);
        }
        let mut check = self.hmac();
        check.update(&payload);
        // Constant-time comparison of the kept bytes.
        check
            .verify_truncated_left(&mac)
            .map_err(|_| LinkError::Invalid)?;
        let text = std::str::from_utf8(&payload).map_err(|_| LinkError::Invalid)?;
        let parts: Vec<&str> = text.split('|').collect();
        let [version, account, incident, user, message, action, expires] = parts[..] else {
            return Err(LinkError::Invalid);
        };
        if version != "v1" {
            return Err(LinkError::Invalid);
        }
        let action = match action {
            "a" => LinkAction::Acknowledge,
            "r" => LinkAction::Resolve,
            _ => return Err(LinkError::Invalid),
        };
        let expires_at: Millis = expires.parse().map_err(|_| LinkError::Invalid)?;
        if now >= expires_at {
            return Err(LinkError::Expired);
        }
        Ok(LinkClaim {
            account_id: account.to_owned(),
            incident_id: incident.to_owned(),
            user_id: user.to_owned(),
            message_id: message.to_owned(),
            action,
            expires_at,
        })
    }

    /// The claim a link in `message` carries.
    pub fn claim(message: &OutgoingMessage, action: LinkAction) -> LinkClaim {
        LinkClaim {
            account_id: message.account_id.clone(),
            incident_id: message.incident_id.clone(),
            user_id: message.user_id.clone(),
            message_id: message.id.clone(),
            action,
            expires_at: message.page_at.saturating_add(LINK_TTL_MS),
        }
    }

    fn hmac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        }
    }

    fn mac(&self, payload: &[u8]) -> Vec<u8> {
        let mut mac = self.hmac();
        mac.update(payload);
        mac.finalize().into_bytes().to_vec()
    }
}

impl Links for Signer {
    fn url(&self, message: &OutgoingMessage, action: LinkAction) -> String {
        format!(
            "{}/links/{}",
            self.public_url,
            self.token(&Self::claim(message, action))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> LinkClaim {
        LinkClaim {
            account_id: "acc00001".into(),
            incident_id: "inc00001".into(),
            user_id: "usr00001".into(),
            message_id: "msg00001".into(),
            action: LinkAction::Acknowledge,
            expires_at: 10_000,
        }
    }

    #[test]
    fn a_link_verifies_until_it_expires() {
        let s = Signer::new(b"key", "https://k.test/");
        let t = s.token(&claim());
        assert_eq!(s.verify(&t, 9_999), Ok(claim()));
        assert_eq!(s.verify(&t, 10_000), Err(LinkError::Expired));
    }

    #[test]
    fn forged_altered_and_foreign_links_are_invalid() {
        let s = Signer::new(b"key", "https://k.test");
        let t = s.token(&claim());
        // Another server's key.
        assert_eq!(
            Signer::new(b"other", "https://k.test").verify(&t, 0),
            Err(LinkError::Invalid)
        );
        // The payload changed to resolve, the MAC kept.
        let (_, mac) = t.split_once('.').unwrap_or_default();
        let resolve = LinkClaim {
            action: LinkAction::Resolve,
            ..claim()
        };
        let altered_payload = s.token(&resolve);
        let (payload, _) = altered_payload.split_once('.').unwrap_or_default();
        assert_eq!(
            s.verify(&format!("{payload}.{mac}"), 0),
            Err(LinkError::Invalid)
        );
        // A truncated MAC, junk, an empty token.
        assert_eq!(s.verify(&t[..t.len() - 2], 0), Err(LinkError::Invalid));
        for junk in ["", ".", "abc", "a.b", "!!.??", "djE.AAAA"] {
            assert_eq!(s.verify(junk, 0), Err(LinkError::Invalid), "{junk}");
        }
    }

    #[test]
    fn use_ids_differ_per_action() {
        let ack = claim();
        let resolve = LinkClaim {
            action: LinkAction::Resolve,
            ..claim()
        };
        assert_ne!(ack.use_id(), resolve.use_id());
        assert_eq!(resolve.incident_action(), IncidentAction::Resolve);
    }
}
