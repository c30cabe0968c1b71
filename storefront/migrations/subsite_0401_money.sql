-- Money correctness (issue 8): delivery is single-flight per order across replicas,
-- retries are fair and capped, a coupon is used when an order is paid (never by an unpaid
-- one), and a refund request after delivery becomes a dispute that HQ decides.

ALTER TABLE orders
    -- The one worker (of any replica) that may act on the order's money until
    -- claimed_until: taken and checked by conditional UPDATEs, so two replicas never
    -- deliver or refund one order at once; a crashed holder's claim simply runs out.
    ADD COLUMN claim_token     text,
    ADD COLUMN claimed_until   timestamptz,
    -- Retries of a delivery (or of a refund that is due): fair, capped, with backoff.
    ADD COLUMN attempts        integer NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN last_error      text,
    -- Set once the order must end refunded (a final refusal, retries exhausted, a coupon
    -- used up): from then on only a refund is retried, never a delivery.
    ADD COLUMN refund_reason   text,
    -- Whether the order's coupon use was counted (at payment).
    ADD COLUMN coupon_used     boolean NOT NULL DEFAULT false;

-- Until now a coupon use was counted when the order was created: give back the uses of
-- orders that were never paid (they are counted again if they ever are).
UPDATE coupons c SET used = greatest(c.used - h.n, 0)
FROM (SELECT coupon_code, count(*) AS n FROM orders
      WHERE status = 'created' AND coupon_code IS NOT NULL GROUP BY coupon_code) h
WHERE c.code = h.coupon_code;
UPDATE orders SET coupon_used = true WHERE coupon_code IS NOT NULL AND status <> 'created';
UPDATE orders SET next_attempt_at = coalesce(paid_at, created_at) WHERE status IN ('paid', 'frozen');

-- The delivery sweep takes due rows, the longest-waiting first; a failed row moves back by
-- its backoff, so a few rows that keep failing never hide the others.
CREATE INDEX orders_due ON orders (next_attempt_at) WHERE status IN ('paid', 'frozen');

-- Refund requests after delivery: the buyer has the key, so money moves only when HQ
-- decides. One dispute per order.
CREATE TABLE order_disputes (
    order_id   text PRIMARY KEY REFERENCES orders(id),
    reason     text NOT NULL,
    opened_by  text NOT NULL,
    status     text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'upheld', 'rejected')),
    opened_at  timestamptz NOT NULL DEFAULT now(),
    decided_at timestamptz
);
