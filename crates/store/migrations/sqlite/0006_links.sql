-- Answer links (sqlite dialect; kept in lockstep with the other backend).

-- Server-wide secrets, made once by whichever process needs one first and
-- shared by every process on the database: the key that signs the
-- one-click acknowledge/resolve links in email, Slack and ntfy messages.
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Links already used: each works once. A row is kept until the link
-- would have expired anyway, then swept.
CREATE TABLE used_links (
    id          TEXT PRIMARY KEY,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER NOT NULL
);
CREATE INDEX used_links_expiry ON used_links (expires_at);
