-- Klaxon schema, SQLite dialect. Kept in lockstep with ../postgres/0001_init.sql.
-- Instants are INTEGER milliseconds since the Unix epoch from the server's
-- virtual clock (KLAXON_CLOCK_SPEED), never the database's own now().

CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    email          TEXT NOT NULL UNIQUE,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'responder', 'observer')),
    time_zone      TEXT NOT NULL,
    password_hash  TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX users_account ON users (account_id, created_at);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

CREATE TABLE policies (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    loop_limit  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE policy_rules (
    id                  TEXT PRIMARY KEY,
    account_id          TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    policy_id           TEXT NOT NULL REFERENCES policies(id) ON DELETE CASCADE,
    position            INTEGER NOT NULL,
    escalation_timeout  INTEGER NOT NULL,
    assignment_type     TEXT NOT NULL CHECK (assignment_type IN ('user', 'schedule')),
    assignee_id         TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE INDEX policy_rules_policy ON policy_rules (policy_id, position);
CREATE INDEX policy_rules_assignee ON policy_rules (assignee_id);

CREATE TABLE services (
    id                    TEXT PRIMARY KEY,
    account_id            TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name                  TEXT NOT NULL,
    description           TEXT,
    policy_id             TEXT NOT NULL REFERENCES policies(id),
    acknowledge_timeout   INTEGER,
    auto_resolve_timeout  INTEGER,
    state                 TEXT NOT NULL CHECK (state IN ('enabled', 'disabled')),
    integration_key       TEXT NOT NULL UNIQUE,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    UNIQUE (account_id, name)
);
CREATE INDEX services_policy ON services (policy_id);

CREATE TABLE incidents (
    id                      TEXT PRIMARY KEY,
    account_id              TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    service_id              TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    state                   TEXT NOT NULL CHECK (state IN ('triggered', 'acknowledged', 'resolved')),
    message                 TEXT NOT NULL,
    description             TEXT,
    details                 TEXT,
    key                     TEXT NOT NULL,
    current_user_id         TEXT REFERENCES users(id) ON DELETE SET NULL,
    current_policy_rule_id  TEXT REFERENCES policy_rules(id) ON DELETE SET NULL,
    escalation_loop_count   INTEGER NOT NULL,
    triggered_at            INTEGER NOT NULL,
    acknowledged_at         INTEGER,
    resolved_at             INTEGER,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL
);
-- Deduplication: at most one unresolved incident per service and key.
CREATE UNIQUE INDEX incidents_open_key ON incidents (service_id, key) WHERE state <> 'resolved';
CREATE INDEX incidents_open_message ON incidents (service_id, message) WHERE state <> 'resolved';
CREATE INDEX incidents_account_recent ON incidents (account_id, triggered_at DESC, id DESC);
CREATE INDEX incidents_service_state ON incidents (service_id, state);
CREATE INDEX incidents_current_user ON incidents (current_user_id);

-- Audit log. seq orders events written in the same millisecond.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    action       TEXT NOT NULL,
    source_type  TEXT NOT NULL,
    source_id    TEXT NOT NULL,
    actor_type   TEXT NOT NULL,
    actor_id     TEXT,
    changeset    TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX events_source ON events (account_id, source_type, source_id, seq);
CREATE INDEX events_account ON events (account_id, seq);

-- Durable timers (escalation, acknowledge timeout, auto-resolve): a row
-- with a due time. Firing one applies its effect and deletes it in one
-- transaction; on PostgreSQL the row lock (FOR UPDATE SKIP LOCKED) is the
-- claim, so no lease columns are needed. attempts counts failed firings.
CREATE TABLE timers (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    incident_id  TEXT NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL CHECK (kind IN ('escalate', 'acknowledge_timeout', 'auto_resolve')),
    due_at       INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL
);
CREATE INDEX timers_due ON timers (due_at, id);
CREATE INDEX timers_incident ON timers (incident_id);

-- Outgoing messages: one row per message, sent by exactly one worker.
CREATE TABLE outbox (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    incident_id  TEXT REFERENCES incidents(id) ON DELETE SET NULL,
    user_id      TEXT REFERENCES users(id) ON DELETE SET NULL,
    channel      TEXT NOT NULL,
    address      TEXT NOT NULL,
    payload      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'delivered', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    due_at       INTEGER NOT NULL,
    lease_owner  TEXT,
    lease_until  INTEGER,
    provider_id  TEXT,
    error        TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (status, due_at);
CREATE INDEX outbox_incident ON outbox (incident_id);
