-- Identities and sessions at HQ: sessions live in the database (logout and a password
-- change end them), and the bootstrap password must be replaced at first login.
ALTER TABLE staff
    ADD COLUMN credential_changed_at timestamptz,
    ADD COLUMN must_change_password boolean NOT NULL DEFAULT false;

-- So far every HQ password came from the bootstrap Secret: it must be changed.
UPDATE staff SET must_change_password = true WHERE password_hash IS NOT NULL;

CREATE TABLE staff_sessions (
    id_hash    text PRIMARY KEY,
    email      text NOT NULL REFERENCES staff (email) ON DELETE CASCADE ON UPDATE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX staff_sessions_email ON staff_sessions (email);
CREATE INDEX staff_sessions_expiry ON staff_sessions (expires_at);
