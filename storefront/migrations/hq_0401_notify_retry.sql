-- Fair notification retries (issue 8): a payment whose site never answers moves back by
-- its backoff instead of being re-sent first on every sweep, so it cannot starve others.
ALTER TABLE payments
    ADD COLUMN notify_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN next_notify_at  timestamptz;
UPDATE payments SET next_notify_at = paid_at WHERE status = 'paid' AND notified_at IS NULL;
CREATE INDEX payments_notify_due ON payments (next_notify_at)
    WHERE status = 'paid' AND notified_at IS NULL;
