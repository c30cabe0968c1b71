-- Settlement compares the ledger with money received per site: a partial refund leaves
-- the payment 'paid' with part of it given back, which `status` alone cannot say.
-- A payment marked 'refunded' is refunded in full whatever this column holds.
ALTER TABLE payments
    ADD COLUMN refunded_fen bigint NOT NULL DEFAULT 0
        CHECK (refunded_fen >= 0 AND refunded_fen <= amount_fen);
