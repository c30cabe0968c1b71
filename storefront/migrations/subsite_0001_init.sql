-- Sub-site: synced catalogue, orders, back office.
CREATE TABLE products (
    id             text PRIMARY KEY,
    name_zh        text NOT NULL,
    name_en        text NOT NULL,
    category       text NOT NULL,
    region         text NOT NULL DEFAULT '',
    face_value_fen bigint NOT NULL,
    cost_fen       bigint NOT NULL,
    stock          integer NOT NULL DEFAULT 0,
    active         boolean NOT NULL DEFAULT true,
    synced_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE catalog_state (
    id        integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    etag      text,
    synced_at timestamptz
);

CREATE TABLE orders (
    id            text PRIMARY KEY,
    product_id    text NOT NULL,
    category      text NOT NULL,
    unit_cost_fen bigint NOT NULL,
    price_fen     bigint NOT NULL,
    discount_fen  bigint NOT NULL DEFAULT 0,
    amount_fen    bigint NOT NULL CHECK (amount_fen >= 0),
    coupon_code   text,
    contact_enc   text NOT NULL,
    contact_hash  text NOT NULL,
    ip_hash       text NOT NULL DEFAULT '',
    status        text NOT NULL DEFAULT 'created'
                  CHECK (status IN ('created', 'paid', 'delivered', 'refunded', 'frozen')),
    risk_action   text,
    risk_rule     text,
    payment_id    text,
    pay_url       text,
    key_enc       text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    paid_at       timestamptz,
    delivered_at  timestamptz,
    refunded_at   timestamptz
);
CREATE INDEX orders_contact ON orders (contact_hash);
CREATE INDEX orders_status ON orders (status, created_at);

-- Payment notifications already processed: a replay changes nothing.
CREATE TABLE payment_notifications (
    id          text PRIMARY KEY,
    order_id    text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Transactional outbox: events are written with the state change and published after.
CREATE TABLE event_outbox (
    event_id     text PRIMARY KEY,
    fields       jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX event_outbox_pending ON event_outbox (created_at) WHERE published_at IS NULL;

CREATE TABLE coupons (
    code        text PRIMARY KEY,
    percent_off integer NOT NULL CHECK (percent_off BETWEEN 1 AND 90),
    max_uses    integer NOT NULL DEFAULT 100,
    used        integer NOT NULL DEFAULT 0,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE withdrawals (
    id           bigserial PRIMARY KEY,
    amount_fen   bigint NOT NULL CHECK (amount_fen > 0),
    status       text NOT NULL DEFAULT 'requested' CHECK (status IN ('requested', 'paid', 'rejected')),
    requested_by text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE announcements (
    id         bigserial PRIMARY KEY,
    title      text NOT NULL,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE blocked_contacts (
    contact_hash text PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE staff (
    email         text PRIMARY KEY,
    name          text NOT NULL,
    password_hash text
);
