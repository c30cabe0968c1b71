-- Customer accounts and their wallet (balance in integer fen). The database itself keeps
-- the money rules: a balance never below zero (CHECK), movements immutable (trigger) and
-- each one unique by its idempotency key, so a replayed notification or a retried refund
-- can never move money twice whatever the application does.
CREATE TABLE customers (
    id            bigserial PRIMARY KEY,
    email         text NOT NULL UNIQUE CHECK (email = lower(email)),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Same shape as staff_sessions: the signed cookie carries a random id, its SHA-256 is here.
CREATE TABLE customer_sessions (
    id_hash     text PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX customer_sessions_customer ON customer_sessions (customer_id);
CREATE INDEX customer_sessions_expiry ON customer_sessions (expires_at);

CREATE TABLE wallets (
    customer_id bigint PRIMARY KEY REFERENCES customers (id),
    balance_fen bigint NOT NULL DEFAULT 0 CONSTRAINT wallet_not_negative CHECK (balance_fen >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE wallet_movements (
    id                bigserial PRIMARY KEY,
    customer_id       bigint NOT NULL REFERENCES wallets (customer_id),
    kind              text NOT NULL CHECK (kind IN ('topup', 'payment', 'refund')),
    amount_fen        bigint NOT NULL,
    balance_after_fen bigint NOT NULL CHECK (balance_after_fen >= 0),
    idem_key          text NOT NULL UNIQUE,
    ref               text NOT NULL,            -- top-up id or order id
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- money in is positive, a payment is the only way out
    CONSTRAINT movement_sign CHECK ((kind = 'payment' AND amount_fen < 0)
                                    OR (kind <> 'payment' AND amount_fen > 0))
);
CREATE INDEX wallet_movements_customer ON wallet_movements (customer_id, id DESC);

CREATE FUNCTION wallet_movements_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'wallet movements are immutable';
END $$;
CREATE TRIGGER wallet_movements_immutable BEFORE UPDATE OR DELETE ON wallet_movements
    FOR EACH ROW EXECUTE FUNCTION wallet_movements_immutable();

-- A top-up is a payment through HQ's channel like an order's; its id names it there.
CREATE TABLE topups (
    id          text PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    amount_fen  bigint NOT NULL CHECK (amount_fen > 0),
    status      text NOT NULL DEFAULT 'created' CHECK (status IN ('created', 'paid')),
    payment_id  text,
    pay_url     text,
    ip_hash     text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    paid_at     timestamptz
);
CREATE INDEX topups_customer ON topups (customer_id, created_at DESC);

-- How an order was paid: through the channel (refunds go back through HQ) or from a
-- customer's wallet (refunds go back to the wallet).
ALTER TABLE orders
    ADD COLUMN paid_via text NOT NULL DEFAULT 'channel' CHECK (paid_via IN ('channel', 'wallet')),
    ADD COLUMN customer_id bigint REFERENCES customers (id),
    ADD CONSTRAINT wallet_order_has_customer CHECK (paid_via = 'channel' OR customer_id IS NOT NULL);
