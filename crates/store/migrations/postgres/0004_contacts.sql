-- Contacts and notification rules (postgres dialect; kept in lockstep with the
-- other backend). A contact is where a user can be paged; a notification
-- rule says which contact to use how many minutes after the user is
-- assigned an incident. The address is validated (and normalised) for its
-- type before it is stored (klaxon_core::contact).

CREATE TABLE contacts (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    type        TEXT NOT NULL CHECK (type IN ('email', 'sms', 'phone', 'webhook', 'slack', 'ntfy')),
    label       TEXT NOT NULL,
    address     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX contacts_user ON contacts (user_id);

CREATE TABLE notification_rules (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    contact_id   TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    start_delay  BIGINT NOT NULL CHECK (start_delay >= 0),
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX notification_rules_user ON notification_rules (user_id, start_delay);
-- Deleting a contact finds its rules through this (the cascade, and the
-- audit events written for each rule).
CREATE INDEX notification_rules_contact ON notification_rules (contact_id);
