-- Pre-lease starts: a manifest the tenant sent for an order this provider bid on, before the
-- lease existed, whose workload runs under the bid's reservation. Written before anything is
-- started, so that a restarted daemon adopts the workload (the lease came) or removes it (the
-- order went elsewhere, ended, or the reservation lapsed), and never forgets it.
CREATE TABLE speculative_deployments (
    order_id BIGINT PRIMARY KEY,
    bid_id BIGINT NOT NULL,
    tenant TEXT NOT NULL,
    manifest_hash TEXT NOT NULL,
    manifest_json TEXT NOT NULL,
    -- The manifest group the order was created for (the lease's holding gets it on adoption).
    group_name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
