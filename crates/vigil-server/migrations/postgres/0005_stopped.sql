-- A clean stop (`POST /v1/services/{id}/stop`): the service is `stopped` while no heartbeat
-- came after this time; registering again clears it. Written through, like an admin change.
ALTER TABLE services ADD COLUMN stopped_at TIMESTAMPTZ;

DROP VIEW service_rows;
CREATE VIEW service_rows AS
    SELECT s.id, s.host, s."binary", s.topic, s.zone, s.disabled, s.disabled_reason,
           s.forced_down, s.frozen, COALESCE(h.report_count, 0) AS report_count,
           s.report_interval, s.version, s.created_at, h.updated_at, s.modified_at, s.row_version,
           s.stopped_at
    FROM services s LEFT JOIN heartbeats h ON h.id = s.id; -- a row restored without one still shows
