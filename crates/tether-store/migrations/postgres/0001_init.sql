-- tether schema v1 (PostgreSQL). Timestamps are i64 milliseconds since the Unix epoch.

CREATE TABLE sessions (
    id            TEXT   PRIMARY KEY,
    user_id       TEXT   NOT NULL,
    email         TEXT   NOT NULL,
    identity_json TEXT   NOT NULL,
    issued_at     BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE binding_requests (
    code         TEXT   PRIMARY KEY,
    fingerprint  TEXT   NOT NULL,
    key_type     TEXT   NOT NULL,
    public_key   TEXT   NOT NULL,
    details_json TEXT   NOT NULL,
    issued_at    BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    status       TEXT   NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
    decided_by   TEXT,
    binding_id   TEXT
);
CREATE INDEX binding_requests_fingerprint ON binding_requests (fingerprint, status);
CREATE INDEX binding_requests_expires_at ON binding_requests (expires_at);

-- One key, one binding: the fingerprint is unique and the id is derived from it.
-- No ON DELETE CASCADE from sessions: every removal must publish its event, so the
-- store deletes bindings explicitly before their session.
CREATE TABLE client_bindings (
    id           TEXT   PRIMARY KEY,
    fingerprint  TEXT   NOT NULL UNIQUE,
    user_id      TEXT   NOT NULL,
    email        TEXT   NOT NULL,
    key_type     TEXT   NOT NULL,
    session_id   TEXT   NOT NULL REFERENCES sessions (id),
    issued_at    BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    details_json TEXT   NOT NULL,
    last_used    BIGINT,
    CHECK (id = 'sshkey-' || fingerprint)
);
CREATE INDEX client_bindings_user_id ON client_bindings (user_id);
CREATE INDEX client_bindings_session_id ON client_bindings (session_id);

CREATE TABLE identity_bindings (
    fingerprint TEXT   PRIMARY KEY,
    user_id     TEXT   NOT NULL,
    email       TEXT   NOT NULL,
    key_type    TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX identity_bindings_user_id ON identity_bindings (user_id);

CREATE TABLE host_keys (
    address    TEXT PRIMARY KEY,
    public_key TEXT NOT NULL
);

-- The change-feed outbox: every mutating transaction appends its events here;
-- other replicas tail it by id, woken by NOTIFY tether_events (sent at commit).
CREATE TABLE events (
    id           BIGSERIAL PRIMARY KEY,
    origin       TEXT   NOT NULL,
    kind         TEXT   NOT NULL,
    payload_json TEXT   NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX events_created_at ON events (created_at);

CREATE FUNCTION tether_notify_event() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('tether_events', NEW.id::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION tether_notify_event();
