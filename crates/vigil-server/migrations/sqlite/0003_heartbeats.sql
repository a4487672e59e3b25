-- The two columns every flush writes move to a narrow table of their own: a flush then
-- rewrites ~20 bytes per service instead of the whole service row, so a few times fewer
-- pages and WAL frames per flush (see BENCHMARKS.md). Triggers keep one heartbeats row per
-- service, whatever code path inserts or deletes it.
CREATE TABLE heartbeats (
    id           INTEGER PRIMARY KEY, -- services.id
    updated_at   INTEGER,             -- server receipt time of the newest heartbeat
    report_count INTEGER NOT NULL DEFAULT 0
);
INSERT INTO heartbeats (id, updated_at, report_count)
    SELECT id, updated_at, report_count FROM services;
ALTER TABLE services DROP COLUMN updated_at;
ALTER TABLE services DROP COLUMN report_count;

CREATE TRIGGER services_add_heartbeats AFTER INSERT ON services
BEGIN
    INSERT INTO heartbeats (id) VALUES (new.id);
END;
CREATE TRIGGER services_drop_heartbeats AFTER DELETE ON services
BEGIN
    DELETE FROM heartbeats WHERE id = old.id;
END;

-- What the server reads: one service with its heartbeat fields.
CREATE VIEW service_rows AS
    SELECT s.id, s.host, s."binary", s.topic, s.zone, s.disabled, s.disabled_reason,
           s.forced_down, s.frozen, COALESCE(h.report_count, 0) AS report_count,
           s.report_interval, s.version, s.created_at, h.updated_at, s.modified_at
    FROM services s LEFT JOIN heartbeats h ON h.id = s.id; -- a row restored without one still shows
