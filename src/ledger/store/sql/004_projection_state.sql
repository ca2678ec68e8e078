-- Read models kept as one state document per projection and tenant, with the last position applied
-- to it in the same row: the checkpoint that makes redelivery harmless (projections/core.py).
CREATE TABLE projection_state (
    projection text        NOT NULL,
    tenant_id  text        NOT NULL,
    position   bigint      NOT NULL CHECK (position >= 0),
    state      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, tenant_id)
);
ALTER TABLE projection_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE projection_state FORCE ROW LEVEL SECURITY;
CREATE POLICY projection_state_tenant_isolation ON projection_state
    USING (current_setting('ledger.tenants', true) = '*'
           OR tenant_id = ANY (string_to_array(current_setting('ledger.tenants', true), ',')))
    WITH CHECK (current_setting('ledger.tenants', true) = '*'
           OR tenant_id = ANY (string_to_array(current_setting('ledger.tenants', true), ',')));
