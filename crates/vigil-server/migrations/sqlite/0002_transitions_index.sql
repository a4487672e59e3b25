-- Finds each service's latest down/up event when a detector starts.
CREATE INDEX events_kind_service ON events (kind, service_id, id);
