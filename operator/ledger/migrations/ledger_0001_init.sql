-- The settlement ledger, in HQ's database, schema `ledger`, with its own migrations.
-- Money is integer minor units (fen) with a currency. Entries are immutable and balanced:
-- the database, not only the code, refuses an unbalanced entry (checked per INSERT of
-- postings; an entry left without legs is refused at COMMIT) and any UPDATE or DELETE.
CREATE SCHEMA IF NOT EXISTS ledger;

CREATE TABLE ledger.accounts (
    id        bigserial PRIMARY KEY,
    name      text NOT NULL,           -- hq:escrow, site:<s>:payable, ...
    currency  text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    site      text,                    -- NULL for HQ's own accounts
    -- Running balance (debits positive), kept by the posting trigger in the same
    -- transaction, so a balance read is one row and "never negative" can be enforced.
    balance   bigint NOT NULL DEFAULT 0,
    -- A partner's payable: a withdrawal hold may never turn its credit balance into a
    -- debit (the available balance never goes negative). The base fee may: then the
    -- partner owes HQ, and no withdrawal passes until sales cover it.
    no_overdraft boolean NOT NULL DEFAULT false,
    UNIQUE (name, currency)
);

CREATE TABLE ledger.entries (
    id          bigserial PRIMARY KEY,
    -- The idempotency key (the event id, or a derived key for the worker's own entries)
    -- and a hash of the inputs: same key + same hash = no-op, different hash = refused.
    key         text NOT NULL UNIQUE,
    input_hash  text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('sale', 'refund', 'withdrawal.hold',
                                              'withdrawal.paid', 'withdrawal.void', 'fee')),
    site        text NOT NULL,
    order_id    text NOT NULL DEFAULT '',
    category    text NOT NULL DEFAULT '',
    currency    text NOT NULL,
    amount      bigint NOT NULL CHECK (amount >= 0),
    -- HQ's revenue share taken (sale) or given back (refund) by this entry.
    share       bigint NOT NULL DEFAULT 0 CHECK (share >= 0),
    -- The rates in force when the entry was made (share per category, base fee,
    -- period, license generation): a statement re-computes from these, never from
    -- today's License.
    rates       jsonb NOT NULL DEFAULT '{}'::jsonb,
    event_at    timestamptz NOT NULL,
    posted_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The statement period the entry counts in; a late event (its own period closed)
    -- lands in the next open one as an adjustment.
    period_start timestamptz NOT NULL,
    adjustment  boolean NOT NULL DEFAULT false
);
CREATE INDEX entries_site_period ON ledger.entries (site, period_start);
CREATE INDEX entries_order ON ledger.entries (site, order_id);

CREATE TABLE ledger.postings (
    entry_id   bigint NOT NULL REFERENCES ledger.entries (id),
    account_id bigint NOT NULL REFERENCES ledger.accounts (id),
    currency   text NOT NULL,
    amount     bigint NOT NULL CHECK (amount <> 0),  -- debit > 0, credit < 0
    PRIMARY KEY (entry_id, account_id)
);
CREATE INDEX postings_account ON ledger.postings (account_id);

-- Idempotency conflicts (same key, other inputs): kept for people and for alarms.
CREATE TABLE ledger.conflicts (
    id         bigserial PRIMARY KEY,
    key        text NOT NULL,
    stored_hash text NOT NULL,
    offered_hash text NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now()
);

-- Withdrawals: a hold (pending) becomes paid or voided; never both.
CREATE TABLE ledger.withdrawals (
    key        text PRIMARY KEY,          -- the withdrawal.requested event id
    site       text NOT NULL,
    withdrawal_id text NOT NULL,          -- the shop's id (W<n>)
    currency   text NOT NULL,
    amount     bigint NOT NULL CHECK (amount > 0),
    input_hash text NOT NULL,
    status     text NOT NULL CHECK (status IN ('pending', 'held', 'paid', 'voided')),
    reason     text NOT NULL DEFAULT '',
    provider_ref text,
    requested_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX withdrawals_open ON ledger.withdrawals (site) WHERE status IN ('pending', 'held');

-- Closed statements: figures frozen as JSON; `kameng ledger verify` re-computes them.
CREATE TABLE ledger.statements (
    site         text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    currency     text NOT NULL,
    figures      jsonb NOT NULL,
    closed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, period_start)
);

-- Balanced, per INSERT statement on postings: every entry touched must sum to zero per
-- currency over ALL its postings, with at least two legs. So an entry's legs go in one
-- statement, and no later statement can add a leg to an old entry. Statement-level with a
-- transition table: one check per batch, not one per leg (a batch holds thousands).
-- The same trigger keeps each account's running balance (one UPDATE per account per
-- statement, not per leg: a hot account like escrow is touched once per batch) and
-- refuses a withdrawal hold that would overdraw a partner's payable.
CREATE FUNCTION ledger.apply_postings() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad record;
BEGIN
    -- LATERAL: one primary-key probe per entry touched. (An IN over the transition table,
    -- which has no statistics, was planned as a scan of all postings: every batch slower
    -- than the one before.)
    SELECT n.entry_id, l.currency, l.s, l.n INTO bad
      FROM (SELECT DISTINCT entry_id FROM new_rows) n
     CROSS JOIN LATERAL (SELECT p.currency, sum(p.amount) AS s, count(*) AS n
                           FROM ledger.postings p WHERE p.entry_id = n.entry_id
                          GROUP BY p.currency) l
     WHERE l.s <> 0 OR l.n < 2 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger entry % is unbalanced in %: legs sum to % (% legs)',
            bad.entry_id, bad.currency, bad.s, bad.n USING ERRCODE = 'check_violation';
    END IF;
    SELECT n.account_id, n.currency INTO bad FROM new_rows n
      JOIN ledger.accounts a ON a.id = n.account_id WHERE a.currency <> n.currency LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'posting currency % does not match account %', bad.currency,
            bad.account_id USING ERRCODE = 'check_violation';
    END IF;
    UPDATE ledger.accounts a SET balance = a.balance + d.s
      FROM (SELECT account_id, sum(amount) AS s FROM new_rows GROUP BY 1) d
     WHERE a.id = d.account_id;
    SELECT a.name INTO bad FROM ledger.accounts a
     WHERE a.no_overdraft AND a.balance > 0 AND EXISTS (
        SELECT 1 FROM new_rows n WHERE n.account_id = a.id AND n.amount > 0 AND EXISTS (
            SELECT 1 FROM ledger.entries e WHERE e.id = n.entry_id
               AND e.kind = 'withdrawal.hold')) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a withdrawal hold would overdraw %', bad.name
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER postings_apply AFTER INSERT ON ledger.postings
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger.apply_postings();

-- An entry without postings is caught too: every entry must have legs at COMMIT.
CREATE FUNCTION ledger.check_has_legs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ledger.postings WHERE entry_id = NEW.id) THEN
        RAISE EXCEPTION 'ledger entry % has no postings', NEW.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER entries_have_legs AFTER INSERT ON ledger.entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger.check_has_legs();

-- Immutable history: postings, entries and closed statements are never rewritten.
CREATE FUNCTION ledger.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on ledger.% is not allowed: the ledger is append-only',
        TG_OP, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER postings_immutable BEFORE UPDATE OR DELETE ON ledger.postings
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER entries_immutable BEFORE UPDATE OR DELETE ON ledger.entries
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER statements_immutable BEFORE UPDATE OR DELETE ON ledger.statements
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER truncate_refused BEFORE TRUNCATE ON ledger.postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();

-- An account's running balance moves only with its postings (the posting trigger runs at
-- trigger depth 2); its name, currency and site never change.
CREATE FUNCTION ledger.guard_account() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.name <> OLD.name OR NEW.currency <> OLD.currency
       OR NEW.site IS DISTINCT FROM OLD.site
       OR (NEW.balance <> OLD.balance AND pg_trigger_depth() < 2) THEN
        RAISE EXCEPTION 'accounts change only through postings'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER accounts_guarded BEFORE UPDATE OR DELETE ON ledger.accounts
    FOR EACH ROW EXECUTE FUNCTION ledger.guard_account();
