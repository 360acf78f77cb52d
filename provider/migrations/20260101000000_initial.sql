-- Portable between SQLite and PostgreSQL: BIGINT and TEXT only, times in unix seconds.

CREATE TABLE IF NOT EXISTS leases (
    lease_id      BIGINT PRIMARY KEY,
    order_id      BIGINT NOT NULL,
    tenant        TEXT   NOT NULL,
    state         TEXT   NOT NULL,
    manifest_hash TEXT,
    manifest_json TEXT,
    deadline      BIGINT,
    reason        TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    version       BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_by_state ON leases (state);

CREATE TABLE IF NOT EXISTS reservations (
    order_id   BIGINT PRIMARY KEY,
    bid_id     BIGINT,
    resources  TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_by_expiry ON reservations (expires_at);

CREATE TABLE IF NOT EXISTS chain_cursors (
    follower   TEXT   PRIMARY KEY,
    last_block BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS replay_keys (
    address   TEXT   NOT NULL,
    signature TEXT   NOT NULL,
    signed_at BIGINT NOT NULL,
    PRIMARY KEY (address, signature)
);
CREATE INDEX IF NOT EXISTS replay_keys_by_age ON replay_keys (signed_at);
