-- The follower's block-hash checkpoints (JSON `[{"number":..,"hash":"0x.."}]`), written in the
-- same statement as `next_block` so that the position and the chain it was read against never
-- disagree; the follower compares them with the chain to find a reorg's fork point.
ALTER TABLE chain_cursors ADD COLUMN checkpoints TEXT NOT NULL DEFAULT '[]';
