-- HQ: master catalogue, card-key inventory, sandbox payment channel, fulfilment.
CREATE TABLE products (
    id             text PRIMARY KEY,
    name_zh        text NOT NULL,
    name_en        text NOT NULL,
    category       text NOT NULL,
    region         text NOT NULL DEFAULT '',
    face_value_fen bigint NOT NULL CHECK (face_value_fen >= 0),
    cost_fen       bigint NOT NULL CHECK (cost_fen >= 0),
    active         boolean NOT NULL DEFAULT true,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE card_keys (
    id          bigserial PRIMARY KEY,
    product_id  text NOT NULL REFERENCES products(id),
    secret_enc  text NOT NULL,          -- "<kid>:<base64 nonce||ct>" (AES-256-GCM)
    secret_hash text NOT NULL,          -- HMAC of the plaintext: refuses duplicate imports
    status      text NOT NULL DEFAULT 'available' CHECK (status IN ('available', 'sold')),
    site        text,
    order_ref   text,
    imported_at timestamptz NOT NULL DEFAULT now(),
    sold_at     timestamptz,
    UNIQUE (secret_hash)
);
-- Allocation picks the oldest available key of a product: this partial index keeps it cheap.
CREATE INDEX card_keys_available ON card_keys (product_id, id) WHERE status = 'available';
-- One key per (site, order): a retried fulfilment returns the same key, never a second.
CREATE UNIQUE INDEX card_keys_order ON card_keys (site, order_ref) WHERE status = 'sold';

CREATE TABLE payments (
    id          text PRIMARY KEY,
    site        text NOT NULL,
    order_id    text NOT NULL,
    amount_fen  bigint NOT NULL CHECK (amount_fen > 0),
    currency    text NOT NULL DEFAULT 'CNY',
    status      text NOT NULL DEFAULT 'created' CHECK (status IN ('created', 'paid', 'refunded')),
    notify_url  text NOT NULL,
    return_url  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    paid_at     timestamptz,
    notified_at timestamptz,
    UNIQUE (site, order_id)
);

-- Highest license sequence seen per site: an older (e.g. pre-suspension) token is refused.
CREATE TABLE site_license_seq (
    site text PRIMARY KEY,
    seq  bigint NOT NULL
);

CREATE TABLE staff (
    email         text PRIMARY KEY,
    name          text NOT NULL,
    password_hash text
);
