-- Health beside liveness: what the heartbeats last reported (`ok`, `warning`, `failing`) and its
-- message. Written by the flush when it changes (rarely, like the zone), so replicas read it
-- through the change feed; registering again clears it.
ALTER TABLE services ADD COLUMN health TEXT;
ALTER TABLE services ADD COLUMN health_message TEXT;

DROP VIEW service_rows;
CREATE VIEW service_rows AS
    SELECT s.id, s.host, s."binary", s.topic, s.zone, s.disabled, s.disabled_reason,
           s.forced_down, s.frozen, COALESCE(h.report_count, 0) AS report_count,
           s.report_interval, s.version, s.created_at, h.updated_at, s.modified_at, s.stopped_at,
           s.health, s.health_message
    FROM services s LEFT JOIN heartbeats h ON h.id = s.id; -- a row restored without one still shows
