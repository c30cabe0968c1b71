-- The risk worker's outcomes, in HQ's database (issue 10): one row per decided event and
-- one per rule hit, so the review back office, `kameng risk review` and backtests query
-- them with SQL instead of scanning Redis. Written by `kameng risk run` in one statement
-- per batch; the primary keys make replays and concurrent replicas harmless.
CREATE SCHEMA IF NOT EXISTS risk;

CREATE TABLE risk.decisions (
    event_id    text PRIMARY KEY,
    site        text NOT NULL,
    order_id    text NOT NULL,
    event       text NOT NULL,
    customer    text NOT NULL DEFAULT '',   -- hash_pii(contact): never the contact itself
    ip          text NOT NULL DEFAULT '',   -- hash_pii(ip)
    category    text NOT NULL DEFAULT '',
    product     text NOT NULL DEFAULT '',
    region      text NOT NULL DEFAULT '',
    amount      bigint NOT NULL CHECK (amount >= 0),   -- fen
    currency    text NOT NULL DEFAULT 'CNY',
    event_at    timestamptz NOT NULL,
    action      text NOT NULL CHECK (action IN ('allow', 'review', 'freeze', 'block')),
    rule        text NOT NULL DEFAULT '',   -- "<policy>/<rule>" that set the action
    snoozed     boolean NOT NULL DEFAULT false,
    -- {"<policy>": <generation>} and {"<policy>": {"<feature>": value}} as evaluated.
    policies    jsonb NOT NULL DEFAULT '{}',
    features    jsonb NOT NULL DEFAULT '{}',
    decided_at  timestamptz NOT NULL
);
-- The review queue: acted-on orders, newest first, per site.
CREATE INDEX risk_decisions_queue ON risk.decisions (decided_at DESC)
    WHERE action IN ('review', 'freeze');
CREATE INDEX risk_decisions_order ON risk.decisions (order_id);
CREATE INDEX risk_decisions_customer ON risk.decisions (customer, event_at DESC)
    WHERE customer <> '';
-- Backtests replay by time.
CREATE INDEX risk_decisions_event_at ON risk.decisions (event_at, event_id);

CREATE TABLE risk.hits (
    event_id    text NOT NULL REFERENCES risk.decisions (event_id) ON DELETE CASCADE,
    policy      text NOT NULL,
    rule        text NOT NULL,
    generation  bigint NOT NULL,            -- the RiskPolicy's metadata.generation
    mode        text NOT NULL CHECK (mode IN ('enforce', 'shadow')),
    action      text NOT NULL CHECK (action IN ('allow', 'review', 'freeze', 'block')),
    reason      text NOT NULL DEFAULT '',
    error       text NOT NULL DEFAULT '',   -- set when the rule failed at run time
    features    jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (event_id, policy, rule)
);
CREATE INDEX risk_hits_rule ON risk.hits (policy, rule);

-- A reviewer's verdict: once per order (the key makes a second verdict a no-op), with
-- who, when and why.
CREATE TABLE risk.reviews (
    order_id    text PRIMARY KEY,
    site        text NOT NULL,
    action      text NOT NULL CHECK (action IN ('allow', 'block')),
    reviewer    text NOT NULL CHECK (reviewer <> ''),
    note        text NOT NULL CHECK (note <> ''),
    reviewed_at timestamptz NOT NULL DEFAULT now()
);

-- Every snooze ever set (the live one is a Redis key with the expiry as TTL, read on
-- every event; this is its audit trail).
CREATE TABLE risk.snoozes (
    id          bigserial PRIMARY KEY,
    entity      text NOT NULL CHECK (entity IN ('customer', 'ip')),
    value       text NOT NULL,
    until_at    timestamptz NOT NULL,
    set_by      text NOT NULL CHECK (set_by <> ''),
    reason      text NOT NULL CHECK (reason <> ''),
    set_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX risk_snoozes_entity ON risk.snoozes (entity, value, until_at DESC);
