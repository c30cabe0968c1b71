-- Issue 11: what the settlement worker has seen of each License, kept in the ledger so a
-- restart neither re-posts nor misses anything (see kameng/ledger/licenses.py).

-- The furthest term each License has been accounted for: a renewal invoice is posted when
-- the License's end grows past it (by HQ's page, `kubectl kameng renew` or a GitOps edit),
-- and the mark moves in the same transaction as the invoice. Keyed by the License's uid:
-- a License deleted and re-created under its name starts a new account.
CREATE TABLE ledger.license_terms (
    license_uid text PRIMARY KEY,
    license     text NOT NULL,
    site        text NOT NULL,
    term_start  timestamptz NOT NULL,
    term_end    timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Every change of a site's fees or plan, from when the worker saw it: statements pro-rate
-- the base fee per part of a period from these rows. Append-only; a row is written only
-- when the rates or plan differ from the site's latest one.
CREATE TABLE ledger.rate_changes (
    id           bigserial PRIMARY KEY,
    site         text NOT NULL,
    license      text NOT NULL,
    plan         text NOT NULL DEFAULT '',
    rates        jsonb NOT NULL,
    effective_at timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX rate_changes_site ON ledger.rate_changes (site, effective_at);

-- The worker looks up a License's renewal invoices before posting one (HQ's page may have
-- posted it first): a small partial index, not a scan of a site's every sale.
CREATE INDEX entries_invoices ON ledger.entries (site, key) WHERE kind = 'invoice';
