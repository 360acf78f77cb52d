-- Pre-lease starts of auto-accept orders (`SendOrderManifest` with `auto_accept`) are recorded
-- while the provider's `placeBid` is still being mined: the bid id is unknown (NULL) until its
-- receipt or `BidPlaced` fills it in. Recreated rather than altered: SQLite cannot drop NOT NULL.
CREATE TABLE speculative_deployments_v2 (
    order_id BIGINT PRIMARY KEY,
    bid_id BIGINT,
    tenant TEXT NOT NULL,
    manifest_hash TEXT NOT NULL,
    manifest_json TEXT NOT NULL,
    group_name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
INSERT INTO speculative_deployments_v2
    (order_id, bid_id, tenant, manifest_hash, manifest_json, group_name, created_at)
    SELECT order_id, bid_id, tenant, manifest_hash, manifest_json, group_name, created_at
    FROM speculative_deployments;
DROP TABLE speculative_deployments;
ALTER TABLE speculative_deployments_v2 RENAME TO speculative_deployments;
