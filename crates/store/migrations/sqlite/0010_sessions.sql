-- Sessions, token expiry, calendar feed tokens and invitations (sqlite
-- dialect; kept in lockstep with the other backend).
--
-- api_tokens.kind says what a token may do:
--   'api'     POST /tokens, and the first token of a registration or
--             bootstrap: the whole API, until revoked or its expires_at;
--   'session' POST /sessions: the whole API; expires_at slides forward
--             (the configured session TTL) each time the token is used,
--             written at most once a minute;
--   'feed'    POST /schedules/:id/feed_token: only the calendar feed of
--             schedule_id, nothing else. One per user and schedule.
-- expires_at NULL never expires. Instants are the server clock's ms.
ALTER TABLE api_tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'api'
    CHECK (kind IN ('api', 'session', 'feed'));
ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE api_tokens ADD COLUMN schedule_id TEXT REFERENCES schedules(id) ON DELETE CASCADE;
CREATE UNIQUE INDEX api_tokens_feed ON api_tokens (user_id, schedule_id) WHERE kind = 'feed';
CREATE INDEX api_tokens_schedule ON api_tokens (schedule_id) WHERE schedule_id IS NOT NULL;

-- Sign-ins before this version minted permanent tokens named 'session':
-- they become sessions that lapse 30 days (the default TTL) after their
-- last use.
UPDATE api_tokens SET kind = 'session', expires_at = COALESCE(last_used_at, created_at) + 2592000000
WHERE name = 'session';

-- Invitations to join an account (POST /invitations): the code is shown
-- once and stored as its SHA-256; it works once (used_at), until
-- expires_at, optionally only for one email address.
CREATE TABLE invitations (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    code_hash   TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'responder', 'observer')),
    email       TEXT,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    used_by     TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX invitations_account ON invitations (account_id, created_at);
CREATE INDEX invitations_used_by ON invitations (used_by) WHERE used_by IS NOT NULL;
