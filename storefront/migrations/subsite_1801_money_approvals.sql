-- Withdrawals and refunds above the RolePolicy's approvalLimits wait for HQ (issue 12).
-- A withdrawal waiting for HQ is 'awaiting_approval': it counts against the balance like
-- any withdrawal not rejected (its amount is reserved, so it cannot be spent twice), and
-- no event leaves the shop until HQ approves. approval_key is the request_key the shop
-- re-sends to HQ (the same request every time), approval_id HQ's request id.
ALTER TABLE withdrawals DROP CONSTRAINT withdrawals_status_check;
ALTER TABLE withdrawals ADD CONSTRAINT withdrawals_status_check
    CHECK (status IN ('awaiting_approval', 'requested', 'paid', 'rejected'));
ALTER TABLE withdrawals ADD COLUMN approval_key text UNIQUE;
ALTER TABLE withdrawals ADD COLUMN approval_id text NOT NULL DEFAULT '';
CREATE INDEX withdrawals_awaiting ON withdrawals (id) WHERE status = 'awaiting_approval';

-- A refund asked for above the limit: not made until HQ approves (then made once, by the
-- refund rule of the order's state at that time), dropped when HQ rejects. One open hold
-- per order.
CREATE TABLE refund_holds (
    id           bigserial PRIMARY KEY,
    order_id     text NOT NULL,
    amount_fen   bigint NOT NULL CHECK (amount_fen > 0),
    requested_by text NOT NULL,
    approval_key text NOT NULL UNIQUE,
    approval_id  text NOT NULL DEFAULT '',
    status       text NOT NULL DEFAULT 'awaiting_approval'
                 CHECK (status IN ('awaiting_approval', 'executed', 'rejected')),
    result       text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    decided_at   timestamptz
);
CREATE UNIQUE INDEX refund_holds_open ON refund_holds (order_id)
    WHERE status = 'awaiting_approval';
