-- The two halves of an append transaction, one round trip each (ledger/store/postgres.py).
-- VOLATILE plpgsql: every statement after the row lock takes a fresh snapshot, so the loads see
-- every transaction that committed before the lock was granted.
CREATE OR REPLACE FUNCTION ledger_lock_and_load(tenants text, needs jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    current_head bigint;
BEGIN
    PERFORM set_config('ledger.tenants', tenants, true);
    SELECT head INTO current_head FROM ledger_position FOR UPDATE;
    RETURN jsonb_build_object(
        'head', current_head,
        'existing', (
            SELECT coalesce(jsonb_agg(jsonb_build_array(e.tenant_id, e.event_id, e.position, e.hash)), '[]')
            FROM jsonb_array_elements(needs -> 'event_ids') AS u(pair)
            JOIN events e ON e.tenant_id = u.pair ->> 0 AND e.event_id = u.pair ->> 1),
        'streams', (
            SELECT coalesce(jsonb_agg(jsonb_build_array(u.pair ->> 0, u.pair ->> 1, (
                SELECT max(e.stream_version) FROM events e
                WHERE e.tenant_id = u.pair ->> 0 AND e.stream_id = u.pair ->> 1))), '[]')
            FROM jsonb_array_elements(needs -> 'streams') AS u(pair)),
        'refs', (
            SELECT coalesce(jsonb_agg(jsonb_build_array(r.tenant_id, r.kind, r.ref_id, r.state)), '[]')
            FROM (
                -- what the events name
                SELECT r.* FROM jsonb_array_elements(needs -> 'refs') AS u(triple)
                JOIN ledger_refs r ON r.tenant_id = u.triple ->> 0 AND r.kind = u.triple ->> 1
                    AND r.ref_id = u.triple ->> 2
                UNION
                -- invoices a refund may reopen: those its payment was applied to
                SELECT i.* FROM jsonb_array_elements(needs -> 'refs') AS u(triple)
                JOIN ledger_refs p ON p.tenant_id = u.triple ->> 0 AND p.kind = 'payment'
                    AND u.triple ->> 1 = 'payment' AND p.ref_id = u.triple ->> 2
                CROSS JOIN LATERAL jsonb_array_elements(p.state -> 'allocations') AS a(pair)
                JOIN ledger_refs i ON i.tenant_id = p.tenant_id AND i.kind = 'invoice'
                    AND i.ref_id = a.pair ->> 0
                UNION
                -- open invoices of customers paying without allocations (oldest due first)
                SELECT r.* FROM jsonb_array_elements(needs -> 'customers') AS u(pair)
                JOIN ledger_refs r ON r.tenant_id = u.pair ->> 0 AND r.customer_id = u.pair ->> 1
                    AND r.kind = 'invoice' AND r.is_open
            ) AS r)
    );
END;
$$;

CREATE OR REPLACE FUNCTION ledger_write(new_head bigint, new_events jsonb, changed_refs jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO events (position, tenant_id, stream_id, stream_version, event_id, type, time,
                        data, metadata, hash)
    SELECT (e ->> 0)::bigint, e ->> 1, e ->> 2, (e ->> 3)::integer, e ->> 4, e ->> 5,
           (e ->> 6)::timestamptz, e -> 7, e -> 8, e ->> 9
    FROM jsonb_array_elements(new_events) AS e;
    INSERT INTO ledger_refs (tenant_id, kind, ref_id, customer_id, is_open, state)
    SELECT r ->> 0, r ->> 1, r ->> 2, r ->> 3, (r ->> 4)::boolean, r -> 5
    FROM jsonb_array_elements(changed_refs) AS r
    ON CONFLICT (tenant_id, kind, ref_id) DO UPDATE
        SET customer_id = excluded.customer_id, is_open = excluded.is_open, state = excluded.state;
    UPDATE ledger_position SET head = new_head;
    PERFORM pg_notify('ledger_events', new_head::text);
END;
$$;
