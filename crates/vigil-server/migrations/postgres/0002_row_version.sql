-- Replicas learn each other's changes by polling `row_version > cursor`. Every write that
-- changes a service takes its value from this sequence while holding the store's write lock,
-- so versions become visible in order and a poller never skips one.
CREATE SEQUENCE services_row_version;
ALTER TABLE services ADD COLUMN row_version BIGINT NOT NULL DEFAULT nextval('services_row_version');
CREATE INDEX services_row_version_idx ON services (row_version);
CREATE INDEX events_kind_service ON events (kind, service_id, id);
