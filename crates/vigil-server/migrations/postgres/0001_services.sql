CREATE TABLE services (
    id              BIGSERIAL PRIMARY KEY, -- never reused: a re-created service gets a new id
    host            TEXT             NOT NULL,
    "binary"         TEXT             NOT NULL,
    topic           TEXT,
    zone            TEXT             NOT NULL,
    disabled        BOOLEAN          NOT NULL DEFAULT FALSE,
    disabled_reason TEXT,
    forced_down     BOOLEAN          NOT NULL DEFAULT FALSE,
    frozen          BOOLEAN          NOT NULL DEFAULT FALSE,
    report_count    BIGINT           NOT NULL DEFAULT 0,
    report_interval DOUBLE PRECISION NOT NULL,
    version         TEXT,
    created_at      TIMESTAMPTZ      NOT NULL,
    updated_at      TIMESTAMPTZ,     -- server receipt time of the newest heartbeat
    modified_at     TIMESTAMPTZ,     -- last admin change; never decides liveness
    UNIQUE (host, "binary")
);

CREATE TABLE events (
    id          BIGSERIAL PRIMARY KEY,
    service_id  BIGINT           NOT NULL,
    host        TEXT             NOT NULL,
    "binary"     TEXT             NOT NULL,
    kind        TEXT             NOT NULL,
    at          TIMESTAMPTZ      NOT NULL,
    reason      TEXT,
    last_seen   TIMESTAMPTZ,
    threshold_s DOUBLE PRECISION
);
CREATE INDEX events_service ON events (service_id, id);
CREATE INDEX events_at ON events (at);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
