-- Heartbeats (sqlite dialect; kept in lockstep with the other backend): a
-- service expects a ping at least every interval_minutes. due_at is the
-- row's durable timer: while the heartbeat is up it is when it expires
-- (last ping, or creation, plus the interval); the engine claims rows whose
-- due_at has passed (FOR UPDATE SKIP LOCKED on PostgreSQL) and moves it on,
-- so a ping is one UPDATE and nothing lives in memory only. The token is
-- the secret of the ping URL, stored as given (admins and responders read
-- it back, like integration keys).
CREATE TABLE heartbeats (
    id                TEXT PRIMARY KEY,
    account_id        TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    service_id        TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    interval_minutes  INTEGER NOT NULL,
    token             TEXT NOT NULL UNIQUE,
    state             TEXT NOT NULL CHECK (state IN ('up', 'down')),
    last_ping_at      INTEGER,
    due_at            INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    UNIQUE (service_id, name)
);
CREATE INDEX heartbeats_due ON heartbeats (due_at, id);
