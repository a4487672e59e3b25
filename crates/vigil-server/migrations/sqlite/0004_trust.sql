-- Tokens of the roles admin, agent and reader (see README, "Security"). Only the SHA-256 of
-- a secret is kept: a copy of the database gives no usable token.
CREATE TABLE tokens (
    name       TEXT    PRIMARY KEY,
    role       TEXT    NOT NULL,     -- admin, agent or reader
    hosts      TEXT    NOT NULL,     -- an agent's host patterns, one per line; empty: any host
    hash       TEXT    NOT NULL UNIQUE, -- hex SHA-256 of the secret
    created_at INTEGER NOT NULL,
    created_by TEXT,
    expires_at INTEGER
);

-- Who made an admin change, registration or deletion: the token's name and the client address.
ALTER TABLE events ADD COLUMN actor TEXT;
ALTER TABLE events ADD COLUMN address TEXT;
