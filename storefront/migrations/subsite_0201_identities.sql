-- Identities and sessions: every member has their own credential, sessions live in the
-- database (so logout and a password change end them everywhere).
ALTER TABLE staff
    ADD COLUMN credential_changed_at timestamptz,
    ADD COLUMN must_change_password boolean NOT NULL DEFAULT false;

-- Every password stored so far was either the shared bootstrap password or one a member
-- manager chose for someone else: none of them is a personal credential. Members get an
-- invitation (kubectl kameng invite) and choose their own; older invitations are void.
UPDATE staff SET password_hash = NULL, credential_changed_at = now();

CREATE TABLE staff_sessions (
    id_hash    text PRIMARY KEY,            -- sha256 of the id in the signed cookie
    email      text NOT NULL REFERENCES staff (email) ON DELETE CASCADE ON UPDATE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX staff_sessions_email ON staff_sessions (email);
CREATE INDEX staff_sessions_expiry ON staff_sessions (expires_at);

-- One row per redeemed invitation: a nonce works once.
CREATE TABLE used_invitations (
    nonce   text PRIMARY KEY,
    email   text NOT NULL,
    used_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX used_invitations_used_at ON used_invitations (used_at);
