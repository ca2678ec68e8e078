-- The two halves of an append transaction, one round trip each (ledger/store/postgres.py).
-- VOLATILE plpgsql: every statement after the row lock takes a fresh snapshot, so the loads see
-- every transaction that committed before the lock was granted.
-- Two statements: the lock, then every load in one query. The keys arrive as JSON and are unpacked
-- in MATERIALIZED CTEs, so the probes join on plain columns: under row-level security a join on
-- `json ->> n` cannot become an index condition (->> is not leakproof). Each probe is a LATERAL
-- subquery with OFFSET 0, which keeps the planner from flattening it into a merge or hash join over
-- the whole table (it misjudges the policy's selectivity and did exactly that).
CREATE OR REPLACE FUNCTION ledger_lock_and_load(tenants text, needs jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    current_head bigint;
    loaded jsonb;
BEGIN
    PERFORM set_config('ledger.tenants', tenants, true);
    SELECT head INTO current_head FROM ledger_position FOR UPDATE;
    WITH event_keys AS MATERIALIZED (
        SELECT x ->> 0 AS t, x ->> 1 AS i FROM jsonb_array_elements(needs -> 'event_ids') AS x
    ), stream_keys AS MATERIALIZED (
        SELECT x ->> 0 AS t, x ->> 1 AS s FROM jsonb_array_elements(needs -> 'streams') AS x
    ), ref_keys AS MATERIALIZED (
        SELECT x ->> 0 AS t, x ->> 1 AS k, x ->> 2 AS i FROM jsonb_array_elements(needs -> 'refs') AS x
    ), customer_keys AS MATERIALIZED (
        SELECT x ->> 0 AS t, x ->> 1 AS c FROM jsonb_array_elements(needs -> 'customers') AS x
    ), named AS MATERIALIZED (
        SELECT r.* FROM ref_keys AS u
        CROSS JOIN LATERAL (SELECT * FROM ledger_refs r
            WHERE r.tenant_id = u.t AND r.kind = u.k AND r.ref_id = u.i OFFSET 0) AS r
    ), followed_keys AS MATERIALIZED (
        -- invoices a refund may reopen: those its payment was applied to
        SELECT p.tenant_id AS t, a.pair ->> 0 AS i FROM named AS p
        CROSS JOIN LATERAL jsonb_array_elements(p.state -> 'allocations') AS a(pair)
        WHERE p.kind = 'payment'
    )
    SELECT jsonb_build_object(
        'head', current_head,
        'existing', (
            SELECT coalesce(jsonb_agg(jsonb_build_array(e.tenant_id, e.event_id, e.position, e.hash)), '[]')
            FROM event_keys AS u
            CROSS JOIN LATERAL (SELECT * FROM events e
                                WHERE e.tenant_id = u.t AND e.event_id = u.i OFFSET 0) AS e),
        'streams', (
            SELECT coalesce(jsonb_agg(jsonb_build_array(u.t, u.s, (
                SELECT max(e.stream_version) FROM events e
                WHERE e.tenant_id = u.t AND e.stream_id = u.s))), '[]')
            FROM stream_keys AS u),
        'refs', (
            SELECT coalesce(jsonb_agg(jsonb_build_array(r.tenant_id, r.kind, r.ref_id, r.state)), '[]')
            FROM (
                SELECT * FROM named
                UNION
                SELECT i.* FROM followed_keys AS u
                CROSS JOIN LATERAL (SELECT * FROM ledger_refs i
                    WHERE i.tenant_id = u.t AND i.kind = 'invoice' AND i.ref_id = u.i OFFSET 0) AS i
                UNION
                -- open invoices of customers paying without allocations (oldest due first)
                SELECT r.* FROM customer_keys AS u
                CROSS JOIN LATERAL (SELECT * FROM ledger_refs r
                    WHERE r.tenant_id = u.t AND r.customer_id = u.c
                      AND r.kind = 'invoice' AND r.is_open OFFSET 0) AS r
            ) AS r)
    ) INTO loaded;
    RETURN loaded;
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
