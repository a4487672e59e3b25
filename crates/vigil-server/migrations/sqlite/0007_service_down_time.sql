-- A service's own service_down_time, declared when it registers (NULL: the server's, or its
-- binary's pattern's). Replaced at each registration, like report_interval.
ALTER TABLE services ADD COLUMN service_down_time REAL;

DROP VIEW service_rows;
CREATE VIEW service_rows AS
    SELECT s.id, s.host, s."binary", s.topic, s.zone, s.disabled, s.disabled_reason,
           s.forced_down, s.frozen, COALESCE(h.report_count, 0) AS report_count,
           s.report_interval, s.version, s.created_at, h.updated_at, s.modified_at, s.stopped_at,
           s.health, s.health_message, s.service_down_time
    FROM services s LEFT JOIN heartbeats h ON h.id = s.id; -- a row restored without one still shows
