-- Live SSH connections, as the replica holding each one last published them (the
-- operator console and `tether sessions list` show every replica's). A replica
-- replaces its rows while it runs; readers ignore stale rows, housekeeping deletes
-- them. Ending one is an event on the outbox, not a change here.
CREATE TABLE live_sessions (
    id             TEXT    PRIMARY KEY NOT NULL,
    replica        TEXT    NOT NULL,
    user_id        TEXT    NOT NULL,
    email          TEXT    NOT NULL,
    session_id     TEXT    NOT NULL,
    binding_id     TEXT    NOT NULL,
    fingerprint    TEXT    NOT NULL,
    route          TEXT,
    login          TEXT    NOT NULL,
    source         TEXT    NOT NULL,
    client_version TEXT    NOT NULL,
    started_at     BIGINT NOT NULL,
    bytes_in       BIGINT NOT NULL,
    bytes_out      BIGINT NOT NULL,
    last_active    BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX live_sessions_replica ON live_sessions (replica);
CREATE INDEX live_sessions_user_id ON live_sessions (user_id);
