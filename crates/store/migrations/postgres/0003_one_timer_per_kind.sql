-- One pending timer per incident and kind (postgres dialect; kept in lockstep
-- with the other backend). Every row of timers is pending (a fired timer
-- is deleted), so the index covers the whole table. Arming a kind that is
-- pending replaces it (INSERT … ON CONFLICT (incident_id, kind) DO UPDATE).

-- A database written before this constraint may hold duplicates: keep the
-- earliest due of each (incident, kind), the one that would fire first.
DELETE FROM timers
WHERE EXISTS (
    SELECT 1 FROM timers AS t
    WHERE t.incident_id = timers.incident_id
      AND t.kind = timers.kind
      AND (t.due_at < timers.due_at OR (t.due_at = timers.due_at AND t.id < timers.id))
);

CREATE UNIQUE INDEX timers_incident_kind ON timers (incident_id, kind);
-- The unique index serves lookups by incident as well.
DROP INDEX timers_incident;
