-- What a payment pays for (kameng.contracts.hq_api.PaymentKind): an order, a top-up of a
-- customer's wallet at a site (escrow HQ holds for the site; never a key's payment), or
-- an order paid from such a wallet (paid at once when the site's escrow covers it).
ALTER TABLE payments
    ADD COLUMN kind text NOT NULL DEFAULT 'order' CHECK (kind IN ('order', 'topup', 'wallet'));
CREATE INDEX payments_site_kind ON payments (site, kind) WHERE kind <> 'order';
