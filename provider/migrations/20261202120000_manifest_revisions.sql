-- Update in place: the manifest revision a lease runs (1 is the order's manifest) and the
-- latest revision announced on chain (`ManifestUpdated`) whose manifest has not arrived
-- yet, so that a restart between the event and the manifest loses nothing.
CREATE TABLE manifest_revisions (
    lease_id BIGINT PRIMARY KEY,
    applied_revision BIGINT NOT NULL,
    pending_revision BIGINT,
    pending_hash TEXT
);
