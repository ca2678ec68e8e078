-- The two halves of an append transaction, one round trip each (ledger/store/postgres.py).
-- VOLATILE plpgsql: every statement after the row lock takes a fresh snapshot, so the loads see
-- every transaction that committed before the lock was granted.
-- Every lookup is a LATERAL probe with OFFSET 0, which keeps the planner from flattening it into a
-- merge or hash join over the whole table (it misjudges the policy's selectivity and did so).
-- The keys arrive as JSON and are unpacked into text[] first: joins on plain columns use the
-- indexes under row-level security, where a join on `json ->> n` would not (->> is not leakproof,
-- so the planner may not push it below the policy, and every lookup would scan the table).
CREATE OR REPLACE FUNCTION ledger_lock_and_load(tenants text, needs jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    current_head bigint;
    event_tenants text[]; event_ids text[];
    stream_tenants text[]; stream_ids text[];
    ref_tenants text[]; ref_kinds text[]; ref_ids text[];
    customer_tenants text[]; customer_ids text[];
    followed_tenants text[]; followed_ids text[];
BEGIN
    PERFORM set_config('ledger.tenants', tenants, true);
    SELECT head INTO current_head FROM ledger_position FOR UPDATE;
    SELECT coalesce(array_agg(x ->> 0), '{}'), coalesce(array_agg(x ->> 1), '{}')
        INTO event_tenants, event_ids FROM jsonb_array_elements(needs -> 'event_ids') AS x;
    SELECT coalesce(array_agg(x ->> 0), '{}'), coalesce(array_agg(x ->> 1), '{}')
        INTO stream_tenants, stream_ids FROM jsonb_array_elements(needs -> 'streams') AS x;
    SELECT coalesce(array_agg(x ->> 0), '{}'), coalesce(array_agg(x ->> 1), '{}'),
           coalesce(array_agg(x ->> 2), '{}')
        INTO ref_tenants, ref_kinds, ref_ids FROM jsonb_array_elements(needs -> 'refs') AS x;
    SELECT coalesce(array_agg(x ->> 0), '{}'), coalesce(array_agg(x ->> 1), '{}')
        INTO customer_tenants, customer_ids FROM jsonb_array_elements(needs -> 'customers') AS x;
    SELECT coalesce(array_agg(u.t), '{}'), coalesce(array_agg(a.pair ->> 0), '{}')
        INTO followed_tenants, followed_ids
        FROM unnest(ref_tenants, ref_kinds, ref_ids) AS u(t, k, i)
        CROSS JOIN LATERAL (SELECT * FROM ledger_refs p
            WHERE p.tenant_id = u.t AND p.kind = u.k AND p.ref_id = u.i OFFSET 0) AS p
        CROSS JOIN LATERAL jsonb_array_elements(p.state -> 'allocations') AS a(pair)
        WHERE u.k = 'payment';
    RETURN jsonb_build_object(
        'head', current_head,
        'existing', (
            SELECT coalesce(jsonb_agg(jsonb_build_array(e.tenant_id, e.event_id, e.position, e.hash)), '[]')
            FROM unnest(event_tenants, event_ids) AS u(t, i)
            CROSS JOIN LATERAL (SELECT * FROM events e
                                WHERE e.tenant_id = u.t AND e.event_id = u.i OFFSET 0) AS e),
        'streams', (
            SELECT coalesce(jsonb_agg(jsonb_build_array(u.t, u.s, (
                SELECT max(e.stream_version) FROM events e
                WHERE e.tenant_id = u.t AND e.stream_id = u.s))), '[]')
            FROM unnest(stream_tenants, stream_ids) AS u(t, s)),
        'refs', (
            SELECT coalesce(jsonb_agg(jsonb_build_array(r.tenant_id, r.kind, r.ref_id, r.state)), '[]')
            FROM (
                -- what the events name
                SELECT r.* FROM unnest(ref_tenants, ref_kinds, ref_ids) AS u(t, k, i)
                CROSS JOIN LATERAL (SELECT * FROM ledger_refs r
                    WHERE r.tenant_id = u.t AND r.kind = u.k AND r.ref_id = u.i OFFSET 0) AS r
                UNION
                -- invoices a refund may reopen: those its payment was applied to
                SELECT i.* FROM unnest(followed_tenants, followed_ids) AS u(t, i)
                CROSS JOIN LATERAL (SELECT * FROM ledger_refs i
                    WHERE i.tenant_id = u.t AND i.kind = 'invoice' AND i.ref_id = u.i OFFSET 0) AS i
                UNION
                -- open invoices of customers paying without allocations (oldest due first)
                SELECT r.* FROM unnest(customer_tenants, customer_ids) AS u(t, c)
                CROSS JOIN LATERAL (SELECT * FROM ledger_refs r
                    WHERE r.tenant_id = u.t AND r.customer_id = u.c
                      AND r.kind = 'invoice' AND r.is_open OFFSET 0) AS r
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
