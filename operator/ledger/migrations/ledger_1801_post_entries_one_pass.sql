-- Issue 9, throughput: the batch-posting trigger of ledger_0003 in ONE statement.
--
-- ledger_0003 expanded the statement's new entries into legs five times (balance check,
-- account check, postings INSERT, balance UPDATE, overdraft check), each a scan of the
-- transition table and a plan of its own. Here the legs are expanded once (a
-- materialised CTE) and the same statement writes the postings, moves the balances and
-- finds the first violation; any violation still raises, so the whole INSERT (the batch)
-- applies nothing. The guarantees and messages are those of ledger_0003:
-- * every new entry's legs sum to zero in its currency;
-- * every account a leg names exists in that currency (the UPDATE below returns each
--   account it touched; a leg whose account is not among them, or is in another
--   currency, is refused);
-- * postings are written from the legs (one row per leg), only here;
-- * each account's balance moves once per statement by the sum of its legs;
-- * a withdrawal hold may not overdraw a no-overdraft payable (checked on the balances
--   after the UPDATE, as before).
-- Data-modifying CTEs always run to completion, whether or not the outer query reads
-- them, so the postings are written even when no check needs them.
CREATE OR REPLACE FUNCTION ledger.post_entries() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad record;
BEGIN
    WITH legs AS MATERIALIZED (
        SELECT e.id, e.currency, e.kind, l.a, l.m FROM new_entries e
         CROSS JOIN LATERAL unnest(e.leg_accounts, e.leg_amounts) AS l(a, m)),
    ins AS (INSERT INTO ledger.postings (entry_id, account_id, currency, amount)
            SELECT id, a, currency, m FROM legs),
    upd AS (UPDATE ledger.accounts acc SET balance = acc.balance + d.s
              FROM (SELECT a, sum(m) AS s FROM legs GROUP BY 1) d
             WHERE acc.id = d.a
            RETURNING acc.id, acc.name, acc.currency, acc.balance, acc.no_overdraft)
    SELECT * INTO bad FROM (
        (SELECT 1 AS why, l.id::text AS what, l.currency AS cur, sum(l.m) AS n FROM legs l
          GROUP BY l.id, l.currency HAVING sum(l.m) <> 0 LIMIT 1)
        UNION ALL
        (SELECT 2, l.a::text, l.currency, 0 FROM legs l LEFT JOIN upd u ON u.id = l.a
          WHERE u.id IS NULL OR u.currency <> l.currency LIMIT 1)
        UNION ALL
        (SELECT 3, u.name, u.currency, 0 FROM upd u
          WHERE u.no_overdraft AND u.balance > 0 AND u.id IN (
                SELECT l.a FROM legs l WHERE l.kind = 'withdrawal.hold' AND l.m > 0) LIMIT 1)
    ) c ORDER BY why LIMIT 1;
    IF FOUND THEN
        IF bad.why = 1 THEN
            RAISE EXCEPTION 'ledger entry % is unbalanced in %: legs sum to %',
                bad.what, bad.cur, bad.n USING ERRCODE = 'check_violation';
        ELSIF bad.why = 2 THEN
            RAISE EXCEPTION 'a leg names account %, which does not exist in %', bad.what,
                bad.cur USING ERRCODE = 'check_violation';
        END IF;
        RAISE EXCEPTION 'a withdrawal hold would overdraw %', bad.what
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
