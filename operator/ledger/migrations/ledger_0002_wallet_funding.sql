-- Customer wallets (issue 9): a top-up is the money that enters HQ's escrow; an order paid
-- from a wallet moves money already in escrow from the site's customers' wallets to the
-- partner, so it must not count as new escrow money a second time.
--
-- `funding` says where an order's money came from (and where its refund goes back to):
-- `channel` (HQ's payment channel: escrow) or `wallet` (site:<s>:wallets). A column with a
-- constant default: existing entries read `channel`, which they were, and no row is
-- rewritten (so the immutability triggers are not involved).
ALTER TABLE ledger.entries
    ADD COLUMN funding text NOT NULL DEFAULT 'channel' CHECK (funding IN ('channel', 'wallet'));
-- A top-up entry: escrow + A, site:<s>:wallets − A (HQ owes it to the site's customers).
ALTER TABLE ledger.entries DROP CONSTRAINT entries_kind_check;
ALTER TABLE ledger.entries ADD CONSTRAINT entries_kind_check
    CHECK (kind IN ('sale', 'refund', 'topup', 'withdrawal.hold', 'withdrawal.paid',
                    'withdrawal.void', 'fee'));
-- Only a sale or refund is ever wallet-funded; a top-up itself comes through the channel.
ALTER TABLE ledger.entries ADD CONSTRAINT entries_funding_kind
    CHECK (funding = 'channel' OR kind IN ('sale', 'refund'));
