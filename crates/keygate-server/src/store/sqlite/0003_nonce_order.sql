-- keygate schema v3 (SQLite): spent nonces keyed by (expires_at, nonce).
--
-- A nonce id is random, so a primary key on it alone put every sign-in on a
-- random page of the index: one more page written per sign-in, per commit. A
-- nonce's expiry is bound to it by the challenge MAC (one nonce, one expiry), so
-- (expires_at, nonce) is as unique as the nonce, and ordering by expiry first
-- makes the inserts of a batch land together at the end of the index. The purge
-- of expired nonces becomes a range delete at its start; the separate expiry
-- index goes.
CREATE TABLE used_nonces_v3 (
    expires_at INTEGER NOT NULL,
    nonce      BLOB NOT NULL,
    PRIMARY KEY (expires_at, nonce)
) WITHOUT ROWID;
INSERT INTO used_nonces_v3 (expires_at, nonce) SELECT expires_at, nonce FROM used_nonces;
DROP TABLE used_nonces;
ALTER TABLE used_nonces_v3 RENAME TO used_nonces;
