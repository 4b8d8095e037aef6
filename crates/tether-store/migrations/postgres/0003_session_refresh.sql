-- Identity refresh at the IdP (SPEC §5): a session's refresh token (sealed by the
-- web side with cookie_secret), when its next refresh is due (also the lease of
-- the replica refreshing it), and the first failed attempt since the last success.
ALTER TABLE sessions ADD COLUMN refresh_token TEXT;
ALTER TABLE sessions ADD COLUMN refresh_due BIGINT;
ALTER TABLE sessions ADD COLUMN refresh_failing_since BIGINT;
CREATE INDEX sessions_refresh_due ON sessions (refresh_due);
