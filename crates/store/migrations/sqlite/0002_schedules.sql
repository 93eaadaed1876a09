-- On-call schedules (sqlite dialect; kept in lockstep with the other backend).
-- A schedule's layers rotate its users; later layers (higher position)
-- cover lower ones; overrides cover everything.

CREATE TABLE schedules (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    time_zone   TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (account_id, name)
);

-- start_at is a wall-clock time in the schedule's zone ('2026-01-05T09:00:00');
-- users is a JSON array of user ids in rotation order; restrictions a JSON
-- array of {"days": ["mon", …], "start": "09:00", "end": "17:00"}.
CREATE TABLE schedule_layers (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    schedule_id   TEXT NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
    position      INTEGER NOT NULL,
    rotation      TEXT NOT NULL CHECK (rotation IN ('hourly', 'daily', 'weekly', 'monthly', 'yearly')),
    count         INTEGER NOT NULL,
    start_at      TEXT NOT NULL,
    users         TEXT NOT NULL,
    restrictions  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX schedule_layers_schedule ON schedule_layers (schedule_id, position);

CREATE TABLE schedule_overrides (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    schedule_id  TEXT NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    start_at     INTEGER NOT NULL,
    end_at       INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX schedule_overrides_schedule ON schedule_overrides (schedule_id, end_at);
