-- Partner onboarding and HQ approvals (issue 12).

-- A partner's application: what they asked for, what reviewers noted, what was decided.
-- status: pending → approved (decided; objects being created) → provisioned (License and
-- SubSite exist, or the GitOps bundle was produced) | rejected.
CREATE TABLE partner_applications (
    id               text PRIMARY KEY,
    -- SHA-256 of the partner's link to follow their application (never the link itself).
    access_hash      text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'approved', 'provisioned', 'rejected')),
    company          text NOT NULL,
    contact_name     text NOT NULL,
    contact_email    text NOT NULL,
    site_name        text NOT NULL,
    domain           text NOT NULL,
    plan             text NOT NULL,
    categories       text[] NOT NULL,
    regions          text[] NOT NULL,
    capability       text NOT NULL DEFAULT '',
    logo             bytea,
    logo_type        text,
    qualification_notes text NOT NULL DEFAULT '',
    credit_notes     text NOT NULL DEFAULT '',
    capability_notes text NOT NULL DEFAULT '',
    decided_by       text,
    decided_at       timestamptz,
    reason           text NOT NULL DEFAULT '',
    provision_mode   text CHECK (provision_mode IN ('kubernetes', 'gitops')),
    provisioned_at   timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- A site name and a domain are claimed by one live application at a time (a rejected
-- one frees them); checked in code first for a clear message, enforced here for races.
CREATE UNIQUE INDEX partner_applications_site ON partner_applications (site_name)
    WHERE status <> 'rejected';
CREATE UNIQUE INDEX partner_applications_domain ON partner_applications (domain)
    WHERE status <> 'rejected';
CREATE INDEX partner_applications_queue ON partner_applications (status, created_at);

CREATE TABLE partner_application_documents (
    id             bigserial PRIMARY KEY,
    application_id text NOT NULL REFERENCES partner_applications (id) ON DELETE CASCADE,
    filename       text NOT NULL,
    content_type   text NOT NULL,
    body           bytea NOT NULL
);

-- A change a partner's staff asked for that the site's RolePolicy puts behind HQ approval.
-- (site, request_key) makes a retried submission the same request.
CREATE TABLE approval_requests (
    id              text PRIMARY KEY,
    site            text NOT NULL,
    request_key     text NOT NULL,
    kind            text NOT NULL,
    change          jsonb NOT NULL,
    requested_by    text NOT NULL,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    note            text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'approved', 'rejected', 'applied', 'failed')),
    decided_by      text,
    decided_at      timestamptz,
    decision_reason text NOT NULL DEFAULT '',
    applied_at      timestamptz,
    error           text NOT NULL DEFAULT '',
    UNIQUE (site, request_key)
);
CREATE INDEX approval_requests_queue ON approval_requests (status, requested_at);
CREATE INDEX approval_requests_site ON approval_requests (site, requested_at DESC);

-- Every state change of an application or an approval request: who, what, when.
-- Append-only: the database refuses to rewrite history.
CREATE TABLE hq_audit (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    subject    text NOT NULL,         -- 'application:<id>' | 'approval:<id>'
    action     text NOT NULL,
    detail     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX hq_audit_subject ON hq_audit (subject, id);

CREATE FUNCTION hq_audit_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'hq_audit is append-only';
END $$;
CREATE TRIGGER hq_audit_no_rewrite BEFORE UPDATE OR DELETE ON hq_audit
    FOR EACH ROW EXECUTE FUNCTION hq_audit_immutable();
