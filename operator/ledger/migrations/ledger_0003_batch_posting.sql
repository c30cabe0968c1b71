-- Posting in batches (issue 9, throughput): an entry carries its legs, and the database
-- writes the postings from them, in the same INSERT statement.
--
-- Before: the worker inserted entries, then postings; a statement trigger on postings
-- probed every touched entry's postings by index to prove it balanced, a deferred
-- per-row trigger on entries proved at COMMIT that each had legs, and two foreign keys
-- ran one check per posting. Most of a batch's database time went there.
--
-- Now the guarantees hold by construction, checked set-wise once per statement:
-- * every new entry declares its legs (leg_accounts, leg_amounts: at least two, none
--   zero; a CHECK, so no entry without legs can exist, at any moment);
-- * its legs sum to zero (the entry's currency; every leg is in it and every account
--   named must exist in that currency), checked over the statement's new entries;
-- * postings are written only by this trigger from the entry just inserted: a direct
--   INSERT into ledger.postings is refused, so no leg is ever added to an old entry,
--   and the foreign keys of postings (the trigger has just checked both sides) go;
-- * balances move with the postings; a withdrawal hold may not overdraw a payable;
-- * UPDATE and DELETE stay refused (ledger_0001).
ALTER TABLE ledger.entries ADD COLUMN leg_accounts bigint[], ADD COLUMN leg_amounts bigint[];
-- NOT VALID: entries posted before this migration have their legs only in postings (and
-- were checked by the old triggers); every entry inserted from now on must declare them.
ALTER TABLE ledger.entries ADD CONSTRAINT entries_legs_declared CHECK (
    leg_accounts IS NOT NULL AND leg_amounts IS NOT NULL
    AND cardinality(leg_accounts) >= 2
    AND cardinality(leg_accounts) = cardinality(leg_amounts)
    AND array_position(leg_amounts, 0::bigint) IS NULL
    AND array_position(leg_accounts, NULL) IS NULL
    AND array_position(leg_amounts, NULL) IS NULL) NOT VALID;

DROP TRIGGER postings_apply ON ledger.postings;
DROP FUNCTION ledger.apply_postings();
DROP TRIGGER entries_have_legs ON ledger.entries;
DROP FUNCTION ledger.check_has_legs();
ALTER TABLE ledger.postings DROP CONSTRAINT postings_entry_id_fkey;
ALTER TABLE ledger.postings DROP CONSTRAINT postings_account_id_fkey;

CREATE FUNCTION ledger.post_entries() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad record;
BEGIN
    SELECT e.id, e.currency, sum(l.m) AS s INTO bad
      FROM new_entries e CROSS JOIN LATERAL unnest(e.leg_accounts, e.leg_amounts) AS l(a, m)
     GROUP BY e.id, e.currency HAVING sum(l.m) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger entry % is unbalanced in %: legs sum to %',
            bad.id, bad.currency, bad.s USING ERRCODE = 'check_violation';
    END IF;
    SELECT d.a, d.currency INTO bad
      FROM (SELECT DISTINCT l.a, e.currency FROM new_entries e
              CROSS JOIN LATERAL unnest(e.leg_accounts) AS l(a)) d
      LEFT JOIN ledger.accounts acc ON acc.id = d.a
     WHERE acc.id IS NULL OR acc.currency <> d.currency LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a leg names account %, which does not exist in %', bad.a,
            bad.currency USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO ledger.postings (entry_id, account_id, currency, amount)
    SELECT e.id, l.a, e.currency, l.m
      FROM new_entries e CROSS JOIN LATERAL unnest(e.leg_accounts, e.leg_amounts) AS l(a, m);
    -- One UPDATE per account per statement, not per leg: a hot account like escrow is
    -- touched once per batch.
    UPDATE ledger.accounts a SET balance = a.balance + d.s
      FROM (SELECT l.a, sum(l.m) AS s FROM new_entries e
              CROSS JOIN LATERAL unnest(e.leg_accounts, e.leg_amounts) AS l(a, m)
             GROUP BY 1) d
     WHERE a.id = d.a;
    SELECT a.name INTO bad FROM ledger.accounts a
     WHERE a.no_overdraft AND a.balance > 0 AND a.id IN (
        SELECT l.a FROM new_entries e
         CROSS JOIN LATERAL unnest(e.leg_accounts, e.leg_amounts) AS l(a, m)
         WHERE e.kind = 'withdrawal.hold' AND l.m > 0) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a withdrawal hold would overdraw %', bad.name
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER entries_post AFTER INSERT ON ledger.entries
    REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT
    EXECUTE FUNCTION ledger.post_entries();

-- The only writer of postings is the trigger above (trigger depth 2 here: the entries
-- INSERT, then its trigger's INSERT).
CREATE FUNCTION ledger.refuse_direct_postings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'postings are written only with their entry (ledger.entries'
            ' leg_accounts and leg_amounts): no leg can be added to an entry'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER postings_only_with_entry BEFORE INSERT ON ledger.postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_direct_postings();
