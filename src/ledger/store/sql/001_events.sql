-- The event store. Events are appended, never updated or deleted (a trigger refuses both).
CREATE TABLE events (
    position       bigint      PRIMARY KEY,
    tenant_id      text        NOT NULL,
    stream_id      text        NOT NULL,
    stream_version integer     NOT NULL,
    event_id       text        NOT NULL,
    type           text        NOT NULL,
    time           timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    data           jsonb       NOT NULL,
    metadata       jsonb       NOT NULL,
    -- SHA-256 of the event's canonical content as published: the idempotency fingerprint. The
    -- tamper-evident chain over these rows is built by the audit projection, not here.
    hash           text        NOT NULL,
    CONSTRAINT events_stream_version_unique UNIQUE (tenant_id, stream_id, stream_version),
    CONSTRAINT events_event_id_unique UNIQUE (tenant_id, event_id),
    CONSTRAINT events_position_positive CHECK (position > 0),
    CONSTRAINT events_stream_version_positive CHECK (stream_version > 0)
);
CREATE INDEX events_tenant_position ON events (tenant_id, position);

-- The single row whose lock serialises position assignment (see ledger/store/postgres.py).
CREATE TABLE ledger_position (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    head bigint  NOT NULL
);
INSERT INTO ledger_position (id, head) VALUES (true, 0);

-- What the append rules need to know of earlier events (customers, contracts, invoices and
-- their open amounts, payments, ...): a write-side model kept in the append transaction.
CREATE TABLE ledger_refs (
    tenant_id   text    NOT NULL,
    kind        text    NOT NULL,
    ref_id      text    NOT NULL,
    customer_id text,
    is_open     boolean NOT NULL DEFAULT false,
    state       jsonb   NOT NULL,
    PRIMARY KEY (tenant_id, kind, ref_id)
);
CREATE INDEX ledger_refs_open_invoices ON ledger_refs (tenant_id, customer_id)
    WHERE kind = 'invoice' AND is_open;

CREATE FUNCTION ledger_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION ledger_events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_events_append_only();

-- Row-level security, the second wall behind every query's own tenant filter. A transaction
-- declares the tenants it works for in the setting ledger.tenants (a comma-separated list; '*'
-- for the system roles: relay, replay, migrations). Superusers bypass RLS, so the store switches
-- to the role ledger_app (created by ledger/store/postgres.py when it can) for its work.
ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
CREATE POLICY events_tenant_isolation ON events
    USING (current_setting('ledger.tenants', true) = '*'
           OR tenant_id = ANY (string_to_array(current_setting('ledger.tenants', true), ',')))
    WITH CHECK (current_setting('ledger.tenants', true) = '*'
           OR tenant_id = ANY (string_to_array(current_setting('ledger.tenants', true), ',')));
ALTER TABLE ledger_refs ENABLE ROW LEVEL SECURITY;
ALTER TABLE ledger_refs FORCE ROW LEVEL SECURITY;
CREATE POLICY ledger_refs_tenant_isolation ON ledger_refs
    USING (current_setting('ledger.tenants', true) = '*'
           OR tenant_id = ANY (string_to_array(current_setting('ledger.tenants', true), ',')))
    WITH CHECK (current_setting('ledger.tenants', true) = '*'
           OR tenant_id = ANY (string_to_array(current_setting('ledger.tenants', true), ',')));
