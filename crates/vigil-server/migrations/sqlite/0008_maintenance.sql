-- Maintenance windows (see README, "Maintenance"): the services of `host` (of `binary` only,
-- or every binary of the host when it is NULL) are flagged in_maintenance from starts_at until
-- ends_at, or until an admin ends the window early (ended_at, ended_by). A window is kept after
-- it ends: the history of what was silenced, when, why and by whom.
CREATE TABLE maintenance (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    host       TEXT    NOT NULL,
    "binary"   TEXT,
    reason     TEXT    NOT NULL,
    starts_at  INTEGER NOT NULL,
    ends_at    INTEGER NOT NULL,
    created_by TEXT,              -- the token's name
    address    TEXT,              -- the client address it came from
    ended_at   INTEGER,           -- ended early by an admin
    ended_by   TEXT
);
CREATE INDEX maintenance_open ON maintenance (ends_at) WHERE ended_at IS NULL;
