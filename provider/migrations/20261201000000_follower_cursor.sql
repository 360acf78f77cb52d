-- The follower's cursor lives here (it was a file in the data dir): the next block to read,
-- so the column says what it holds.
ALTER TABLE chain_cursors RENAME COLUMN last_block TO next_block;
