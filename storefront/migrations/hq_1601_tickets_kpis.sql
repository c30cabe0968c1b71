-- Support tickets from sub-sites (kameng.contracts.hq_api TICKETS_PATH): routed by category
-- to an HQ team, with a first-answer deadline from the priority's SLA.
CREATE TABLE tickets (
    id          bigserial PRIMARY KEY,
    site        text NOT NULL,
    category    text NOT NULL,
    priority    text NOT NULL CHECK (priority IN ('urgent', 'high', 'normal', 'low')),
    subject     text NOT NULL,
    team        text NOT NULL,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'answered', 'closed')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    due_at      timestamptz NOT NULL,
    answered_at timestamptz
);
-- A site lists its own tickets; a team its open queue.
CREATE INDEX tickets_site ON tickets (site, id DESC);
CREATE INDEX tickets_team_open ON tickets (team, due_at) WHERE status <> 'closed';

CREATE TABLE ticket_messages (
    id         bigserial PRIMARY KEY,
    ticket_id  bigint NOT NULL REFERENCES tickets(id),
    side       text NOT NULL CHECK (side IN ('site', 'hq')),
    author     text NOT NULL,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ticket_messages_ticket ON ticket_messages (ticket_id, id);

CREATE TABLE ticket_attachments (
    id           bigserial PRIMARY KEY,
    message_id   bigint NOT NULL REFERENCES ticket_messages(id),
    filename     text NOT NULL,
    content_type text NOT NULL,
    size         integer NOT NULL CHECK (size >= 0 AND size <= 2097152),
    data         bytea NOT NULL
);
CREATE INDEX ticket_attachments_message ON ticket_attachments (message_id);

-- What only a shop can count (kameng.contracts.hq_api.KpiReport), the latest report per
-- site, day and category; HQ's own money figures come from payments and card_keys.
CREATE TABLE site_kpi_days (
    site             text NOT NULL,
    day              date NOT NULL,
    category         text NOT NULL,
    visits           bigint NOT NULL DEFAULT 0,
    orders           bigint NOT NULL DEFAULT 0,
    customers        bigint NOT NULL DEFAULT 0,
    repeat_customers bigint NOT NULL DEFAULT 0,
    complaints       bigint NOT NULL DEFAULT 0,
    reported_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, day, category)
);
-- KPIs by day per site: the paid payments of a period.
CREATE INDEX payments_site_paid ON payments (site, paid_at) WHERE status <> 'created';

-- Plan changes HQ made from its back office (who, which site and License, from, to, when);
-- the change itself is the License's, through the Kubernetes API.
CREATE TABLE plan_changes (
    id          bigserial PRIMARY KEY,
    site        text NOT NULL,
    license     text NOT NULL,
    from_plan   text NOT NULL,
    to_plan     text NOT NULL,
    changed_by  text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
