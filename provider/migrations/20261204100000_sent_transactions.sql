-- The transaction lane's journal: every transaction the provider's account signed, written
-- before it is broadcast, so a restarted daemon finds what it left in flight, waits for it
-- (re-broadcasting or replacing it) and never signs the same call twice or skips a nonce.
-- Fees are decimal wei (they can exceed a signed 64-bit column); `raw_tx` is the hex of the
-- EIP-2718 encoding. `outcome` is NULL while the nonce is unsettled, then `mined` (the attempt
-- that was mined), `superseded` (another attempt of its nonce was), `taken` (a transaction we
-- never signed used the nonce) or `rejected` (the node refused it; it was never in the pool).
CREATE TABLE sent_transactions (
    tx_hash TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    nonce BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    purpose TEXT NOT NULL,
    raw_tx TEXT NOT NULL,
    max_fee_per_gas TEXT NOT NULL,
    max_priority_fee_per_gas TEXT NOT NULL,
    sent_at BIGINT NOT NULL,
    outcome TEXT
);
CREATE INDEX sent_transactions_account_nonce ON sent_transactions (account, nonce);
