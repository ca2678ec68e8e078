-- One round trip for most appends (ledger/store/known.py). The writer keeps what it knows of
-- `ledger_refs` and of stream versions as of the head it last saw, decides the next events on that
-- knowledge, and sends them in one call that takes the position lock and writes them only if the
-- head is still the one it knew: nobody appended meanwhile. Keys it never saw are assumed absent,
-- and the call checks that too, under the lock. When either check fails the call writes nothing,
-- and the writer takes the two round trips of 002 (lock and load, then write).
--
-- `stamp` names the state at `head`: a random number each writing transaction sets. A head alone
-- could come back with other contents (a database restored to an earlier head and appended to by
-- another writer); `ledger refs rebuild` changes references without moving the head and sets it
-- too.
ALTER TABLE ledger_position ADD COLUMN stamp bigint NOT NULL DEFAULT 0;

-- 002's loads, unchanged, as a function of their own: ledger_lock_and_load loads after the lock,
-- ledger_append_known checks with the same query that the keys it assumed absent are absent.
-- VOLATILE: each statement takes a fresh snapshot (the caller holds the lock).
CREATE OR REPLACE FUNCTION ledger_load(needs jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    loaded jsonb;
BEGIN
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

CREATE OR REPLACE FUNCTION ledger_lock_and_load(tenants text, needs jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    current_head bigint;
    current_stamp bigint;
BEGIN
    PERFORM set_config('ledger.tenants', tenants, true);
    SELECT head, stamp INTO current_head, current_stamp FROM ledger_position FOR UPDATE;
    RETURN ledger_load(needs) || jsonb_build_object('head', current_head, 'stamp', current_stamp);
END;
$$;

-- 002's ledger_write (kept for writers of an older version: they move the head, which is enough
-- to tell any writer's knowledge is stale) and the stamp.
CREATE OR REPLACE FUNCTION ledger_write(new_head bigint, new_stamp bigint, new_events jsonb,
                                        changed_refs jsonb) RETURNS void
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
    UPDATE ledger_position SET head = new_head, stamp = new_stamp;
    PERFORM pg_notify('ledger_events', new_head::text);
END;
$$;

-- Writes the events decided on the writer's knowledge of (known_head, known_stamp) and returns
-- NULL, or writes nothing and returns why: {"head", "stamp", "stale": true} when the head moved or
-- was restamped, {"head", "stamp", "assumed": false} when a key assumed absent exists. `assumed`:
-- the keys the writer did not know, in ledger_load's form, or NULL. The caller commits either way.
CREATE OR REPLACE FUNCTION ledger_append_known(tenants text, known_head bigint, known_stamp bigint,
                                               assumed jsonb, new_head bigint, new_stamp bigint,
                                               new_events jsonb, changed_refs jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    current_head bigint;
    current_stamp bigint;
    found jsonb;
BEGIN
    PERFORM set_config('ledger.tenants', tenants, true);
    SELECT head, stamp INTO current_head, current_stamp FROM ledger_position FOR UPDATE;
    IF current_head <> known_head OR current_stamp <> known_stamp THEN
        RETURN jsonb_build_object('head', current_head, 'stamp', current_stamp, 'stale', true);
    END IF;
    IF assumed IS NOT NULL THEN
        found := ledger_load(assumed);
        IF found -> 'existing' <> '[]'::jsonb OR found -> 'refs' <> '[]'::jsonb
           OR EXISTS (SELECT 1 FROM jsonb_array_elements(found -> 'streams') AS s
                      WHERE s -> 2 <> 'null'::jsonb) THEN
            RETURN jsonb_build_object('head', current_head, 'stamp', current_stamp,
                                      'assumed', false);
        END IF;
    END IF;
    IF new_head > current_head THEN
        PERFORM ledger_write(new_head, new_stamp, new_events, changed_refs);
    END IF;
    RETURN NULL;
END;
$$;
