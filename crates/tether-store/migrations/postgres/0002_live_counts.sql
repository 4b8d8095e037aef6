-- Live SSH connections per client binding, as each replica last published them
-- (several replicas on one database: the bindings page shows the sum). A replica
-- re-stamps its rows while it runs; readers ignore stale rows, housekeeping
-- deletes them.
CREATE TABLE live_counts (
    replica    TEXT    NOT NULL,
    binding_id TEXT    NOT NULL,
    connections BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (replica, binding_id)
);
CREATE INDEX live_counts_binding_id ON live_counts (binding_id);
