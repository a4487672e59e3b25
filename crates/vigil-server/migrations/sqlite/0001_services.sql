-- Times are UTC microseconds since the Unix epoch (INTEGER): compact, and fast to load at start-up.
CREATE TABLE services (
    id              INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: a re-created service gets a new id
    host            TEXT    NOT NULL,
    "binary"         TEXT    NOT NULL,
    topic           TEXT,
    zone            TEXT    NOT NULL,
    disabled        INTEGER NOT NULL DEFAULT 0,
    disabled_reason TEXT,
    forced_down     INTEGER NOT NULL DEFAULT 0,
    frozen          INTEGER NOT NULL DEFAULT 0,
    report_count    INTEGER NOT NULL DEFAULT 0,
    report_interval REAL    NOT NULL,
    version         TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER,          -- server receipt time of the newest heartbeat
    modified_at     INTEGER,          -- last admin change; never decides liveness
    UNIQUE (host, "binary")
);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    service_id  INTEGER NOT NULL,
    host        TEXT    NOT NULL,
    "binary"     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    reason      TEXT,
    last_seen   INTEGER,
    threshold_s REAL
);
CREATE INDEX events_service ON events (service_id, id);
CREATE INDEX events_at ON events (at);

-- Small key/value facts about the server itself, e.g. `last_alive` for the restart grace rule.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
