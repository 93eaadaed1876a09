-- The notification outbox (postgres dialect; kept in lockstep with the other
-- backend). One row per message to send: written in the same transaction
-- as the change that causes it, claimed by one sender with a lease, and
-- kept as the record of who was paged how and when. The table of the
-- same name from 0001 was never written: it is replaced.

DROP TABLE outbox;

CREATE TABLE outbox (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    incident_id  TEXT NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- NULL: the user has no contact and is paged at their sign-in address.
    contact_id   TEXT REFERENCES contacts(id) ON DELETE SET NULL,
    -- Why: assigned | escalated | retriggered.
    reason       TEXT NOT NULL,
    channel      TEXT NOT NULL CHECK (channel IN ('email', 'sms', 'phone', 'webhook', 'slack', 'ntfy')),
    address      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'delivered', 'failed', 'cancelled')),
    attempts     BIGINT NOT NULL DEFAULT 0,
    -- When the page was decided, and when this message is due (a rule's delay later).
    page_at      BIGINT NOT NULL,
    due_at       BIGINT NOT NULL,
    lease_owner  TEXT,
    lease_until  BIGINT,
    provider_id  TEXT,
    error        TEXT,
    sent_at      BIGINT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
-- What the sender claims: queued messages by due time, and sends whose
-- lease ran out (the process sending them died).
CREATE INDEX outbox_queued ON outbox (due_at) WHERE status = 'queued';
CREATE INDEX outbox_sending ON outbox (lease_until) WHERE status = 'sending';
CREATE INDEX outbox_incident ON outbox (incident_id, created_at);
CREATE INDEX outbox_user ON outbox (user_id, created_at);
