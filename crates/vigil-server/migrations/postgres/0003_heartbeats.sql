-- The two columns every flush writes move to a narrow table with room on each page
-- (fillfactor 50) and no index on them, so that a flush is a HOT update: the new row
-- version goes on the same page and no index is touched. In the wide row, each flushed
-- heartbeat rewrote the whole row and every index entry, because `row_version` (indexed, for
-- the change feed) changed with it: about three times the database CPU per heartbeat.
CREATE TABLE heartbeats (
    id           BIGINT PRIMARY KEY REFERENCES services (id) ON DELETE CASCADE,
    updated_at   TIMESTAMPTZ,     -- server receipt time of the newest heartbeat
    report_count BIGINT NOT NULL DEFAULT 0
) WITH (fillfactor = 50);
INSERT INTO heartbeats (id, updated_at, report_count)
    SELECT id, updated_at, report_count FROM services;
ALTER TABLE services DROP COLUMN updated_at, DROP COLUMN report_count;

CREATE FUNCTION services_add_heartbeats() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO heartbeats (id) VALUES (NEW.id);
    RETURN NULL;
END;
$$;
CREATE TRIGGER services_add_heartbeats AFTER INSERT ON services
    FOR EACH ROW EXECUTE FUNCTION services_add_heartbeats();

-- How replicas learn each other's heartbeats: each flush appends what it wrote, one row per
-- statement, versioned from the same sequence as `services.row_version` under the same write
-- lock (so versions become visible in order). Rows older than a short retention are pruned by
-- the flushes themselves; `meta.beat_log_pruned_through` says how far, so that a replica whose
-- cursor fell behind it reads the heartbeats table whole instead.
CREATE SEQUENCE beat_log_writers; -- one value per server process that connects
CREATE TABLE beat_log (
    version    BIGINT PRIMARY KEY,
    writer     BIGINT        NOT NULL, -- the writing server process: it reads back only the counts
    written_at TIMESTAMPTZ   NOT NULL DEFAULT clock_timestamp(), -- after the write lock, unlike now()
    ids        BIGINT[]      NOT NULL,
    updated    TIMESTAMPTZ[] NOT NULL,
    counts     BIGINT[]      NOT NULL  -- report_count after the flush
);
-- Out of line and uncompressed: ids and times hardly compress, and trying cost a fifth of a flush.
ALTER TABLE beat_log ALTER COLUMN ids SET STORAGE EXTERNAL,
                     ALTER COLUMN updated SET STORAGE EXTERNAL,
                     ALTER COLUMN counts SET STORAGE EXTERNAL;

-- What the server reads: one service with its heartbeat fields.
CREATE VIEW service_rows AS
    SELECT s.id, s.host, s."binary", s.topic, s.zone, s.disabled, s.disabled_reason,
           s.forced_down, s.frozen, COALESCE(h.report_count, 0) AS report_count,
           s.report_interval, s.version, s.created_at, h.updated_at, s.modified_at, s.row_version
    FROM services s LEFT JOIN heartbeats h ON h.id = s.id; -- a row restored without one still shows
