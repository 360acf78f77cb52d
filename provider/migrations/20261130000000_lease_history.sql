-- How often a lease's deployment failed in a row (reset when it runs), so the daemon can
-- give up on a workload the engine keeps refusing instead of billing it forever.
ALTER TABLE leases ADD COLUMN deploy_failures BIGINT NOT NULL DEFAULT 0;

-- What happened to each lease, in order: the account a tenant reads in its events.
CREATE TABLE IF NOT EXISTS lease_history (
    lease_id BIGINT NOT NULL,
    seq      BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    kind     TEXT   NOT NULL,
    message  TEXT   NOT NULL,
    PRIMARY KEY (lease_id, seq)
);
