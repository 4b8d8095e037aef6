-- tether schema v1 (SQLite). Timestamps are i64 milliseconds since the Unix epoch.

CREATE TABLE sessions (
    id            TEXT    PRIMARY KEY NOT NULL,
    user_id       TEXT    NOT NULL,
    email         TEXT    NOT NULL,
    identity_json TEXT    NOT NULL,
    issued_at     INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE binding_requests (
    code         TEXT    PRIMARY KEY NOT NULL,
    fingerprint  TEXT    NOT NULL,
    key_type     TEXT    NOT NULL,
    public_key   TEXT    NOT NULL,
    details_json TEXT    NOT NULL,
    issued_at    INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
    decided_by   TEXT,
    binding_id   TEXT
);
CREATE INDEX binding_requests_fingerprint ON binding_requests (fingerprint, status);
CREATE INDEX binding_requests_expires_at ON binding_requests (expires_at);

-- One key, one binding: the fingerprint is unique and the id is derived from it.
-- No ON DELETE CASCADE from sessions: every removal must publish its event, so the
-- store deletes bindings explicitly before their session.
CREATE TABLE client_bindings (
    id           TEXT    PRIMARY KEY NOT NULL,
    fingerprint  TEXT    NOT NULL UNIQUE,
    user_id      TEXT    NOT NULL,
    email        TEXT    NOT NULL,
    key_type     TEXT    NOT NULL,
    session_id   TEXT    NOT NULL REFERENCES sessions (id),
    issued_at    INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    details_json TEXT    NOT NULL,
    last_used    INTEGER,
    CHECK (id = 'sshkey-' || fingerprint)
);
CREATE INDEX client_bindings_user_id ON client_bindings (user_id);
CREATE INDEX client_bindings_session_id ON client_bindings (session_id);

CREATE TABLE identity_bindings (
    fingerprint TEXT    PRIMARY KEY NOT NULL,
    user_id     TEXT    NOT NULL,
    email       TEXT    NOT NULL,
    key_type    TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX identity_bindings_user_id ON identity_bindings (user_id);

CREATE TABLE host_keys (
    address    TEXT PRIMARY KEY NOT NULL,
    public_key TEXT NOT NULL
);

-- The change-feed outbox: every mutating transaction appends its events here;
-- other processes tail it by id.
CREATE TABLE events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    origin       TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    payload_json TEXT    NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX events_created_at ON events (created_at);
