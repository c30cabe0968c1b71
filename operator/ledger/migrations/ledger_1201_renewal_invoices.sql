-- Renewal invoices (issue 11): kind `invoice`, a claim on the partner for a future term
-- (site:<s>:receivable + A, hq:deferred_fees − A); see kameng/ledger/invoices.py. It has
-- no payable effect, so statements are unchanged. The check lists every kind of the
-- migrations before this one (0002 added `topup`) plus `invoice`.
ALTER TABLE ledger.entries DROP CONSTRAINT entries_kind_check;
ALTER TABLE ledger.entries ADD CONSTRAINT entries_kind_check
    CHECK (kind IN ('sale', 'refund', 'topup', 'withdrawal.hold', 'withdrawal.paid',
                    'withdrawal.void', 'fee', 'invoice'));
