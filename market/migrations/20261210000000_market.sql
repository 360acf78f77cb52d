-- The market indexer's tables. The same SQL runs on SQLite and PostgreSQL: BIGINT and TEXT
-- columns only; token amounts and other u256 values are decimal TEXT; addresses and hashes are
-- lowercase 0x-hex TEXT. `events` is the source of truth: every other table except `cursor`
-- and `names` is derived from it in (block, log_index) order and can be rebuilt from it.

CREATE TABLE cursor (
    id BIGINT PRIMARY KEY,
    next_block BIGINT NOT NULL,
    checkpoints TEXT NOT NULL
);

CREATE TABLE events (
    block BIGINT NOT NULL,
    log_index BIGINT NOT NULL,
    tx_hash TEXT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    -- the log as read (JSON), so derived state can be rebuilt after a reorg
    raw TEXT NOT NULL,
    PRIMARY KEY (block, log_index)
);

CREATE TABLE providers (
    address TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    status TEXT NOT NULL,
    gateway_cert_sha256 TEXT NOT NULL,
    cpu_millis BIGINT NOT NULL,
    memory_bytes BIGINT NOT NULL,
    storage_bytes BIGINT NOT NULL,
    allocated_cpu_millis BIGINT NOT NULL,
    allocated_memory_bytes BIGINT NOT NULL,
    allocated_storage_bytes BIGINT NOT NULL,
    stake TEXT NOT NULL,
    deliveries_confirmed BIGINT NOT NULL,
    deliveries_failed BIGINT NOT NULL,
    active_leases BIGINT NOT NULL,
    registered_block BIGINT NOT NULL,
    updated_block BIGINT NOT NULL
);

CREATE TABLE provider_attributes (
    provider TEXT NOT NULL,
    position BIGINT NOT NULL,
    attribute_key TEXT NOT NULL,
    PRIMARY KEY (provider, position)
);

CREATE TABLE provider_gpus (
    provider TEXT NOT NULL,
    model_key TEXT NOT NULL,
    total BIGINT NOT NULL,
    allocated BIGINT NOT NULL,
    PRIMARY KEY (provider, model_key)
);

CREATE TABLE orders (
    id BIGINT PRIMARY KEY,
    tenant TEXT NOT NULL,
    manifest_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    max_price_per_hour TEXT NOT NULL,
    escrow TEXT NOT NULL,
    bid_window_end BIGINT NOT NULL,
    cpu_millis BIGINT NOT NULL,
    memory_bytes BIGINT NOT NULL,
    storage_bytes BIGINT NOT NULL,
    gpu_count BIGINT NOT NULL,
    replicas BIGINT NOT NULL,
    auto_accept_provider TEXT,
    auto_accept_max_price TEXT,
    created_block BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX orders_tenant ON orders (tenant, id);

CREATE TABLE bids (
    order_id BIGINT NOT NULL,
    bid_id BIGINT NOT NULL,
    provider TEXT NOT NULL,
    price_per_hour TEXT NOT NULL,
    state TEXT NOT NULL,
    gpu_model TEXT,
    placed_block BIGINT NOT NULL,
    placed_at BIGINT NOT NULL,
    PRIMARY KEY (order_id, bid_id)
);

CREATE TABLE leases (
    id BIGINT PRIMARY KEY,
    order_id BIGINT NOT NULL,
    bid_id BIGINT NOT NULL,
    tenant TEXT NOT NULL,
    provider TEXT NOT NULL,
    price_per_hour TEXT NOT NULL,
    gpu_model TEXT,
    state TEXT NOT NULL,
    paid_total TEXT NOT NULL,
    confirmed_at BIGINT,
    created_block BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX leases_tenant ON leases (tenant, id);
CREATE INDEX leases_provider ON leases (provider, id);

CREATE TABLE payments (
    lease_id BIGINT NOT NULL,
    block BIGINT NOT NULL,
    log_index BIGINT NOT NULL,
    at BIGINT NOT NULL,
    amount TEXT NOT NULL,
    total_paid TEXT NOT NULL,
    PRIMARY KEY (block, log_index)
);
CREATE INDEX payments_lease ON payments (lease_id, block, log_index);

CREATE TABLE top_ups (
    order_id BIGINT NOT NULL,
    block BIGINT NOT NULL,
    log_index BIGINT NOT NULL,
    at BIGINT NOT NULL,
    from_address TEXT NOT NULL,
    amount TEXT NOT NULL,
    escrow TEXT NOT NULL,
    PRIMARY KEY (block, log_index)
);
CREATE INDEX top_ups_order ON top_ups (order_id, block, log_index);

CREATE TABLE closes (
    lease_id BIGINT PRIMARY KEY,
    block BIGINT NOT NULL,
    log_index BIGINT NOT NULL,
    at BIGINT NOT NULL,
    closed_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    refund TEXT NOT NULL,
    paid TEXT NOT NULL
);

CREATE TABLE price_history (
    lease_id BIGINT NOT NULL,
    block BIGINT NOT NULL,
    log_index BIGINT NOT NULL,
    at BIGINT NOT NULL,
    price_per_hour TEXT NOT NULL,
    gpu_model TEXT,
    PRIMARY KEY (block, log_index)
);
CREATE INDEX price_history_at ON price_history (at);

CREATE TABLE capacity_history (
    provider TEXT NOT NULL,
    block BIGINT NOT NULL,
    log_index BIGINT NOT NULL,
    at BIGINT NOT NULL,
    cpu_millis BIGINT NOT NULL,
    memory_bytes BIGINT NOT NULL,
    storage_bytes BIGINT NOT NULL,
    allocated_cpu_millis BIGINT NOT NULL,
    allocated_memory_bytes BIGINT NOT NULL,
    allocated_storage_bytes BIGINT NOT NULL,
    PRIMARY KEY (block, log_index)
);
CREATE INDEX capacity_history_provider ON capacity_history (provider, at);

-- Readable names of chain keys (GPU models, attributes), from the registry's `KeyNamed`
-- event (the registry hashes each name itself, so a name always matches its key).
CREATE TABLE names (
    name_key TEXT PRIMARY KEY,
    name TEXT NOT NULL
);
