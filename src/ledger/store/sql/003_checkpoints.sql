-- Where each reader of the store has got to: the relay's last position acknowledged by the broker,
-- and per partition the offset and position of the last message it wrote there (`marks`), which the
-- relay reads back to notice a broker that lost data.
CREATE TABLE ledger_checkpoints (
    name       text        PRIMARY KEY,
    position   bigint      NOT NULL CHECK (position >= 0),
    marks      jsonb       NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);
