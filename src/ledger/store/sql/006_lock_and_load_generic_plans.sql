-- Back to PostgreSQL's plan cache for ledger_lock_and_load: planning its one big query anew on
-- every call (005) cost about 1.1 ms, most of a single-event append. The plan a session caches is
-- only as good as the table sizes it was made for (005 says what a plan made on tiny tables did), so
-- the store discards its writer connection's plans whenever the store has doubled since they were
-- made (`replan_growth` in ledger/store/postgres.py): O(log n) replans, each with the sizes of now.
ALTER FUNCTION ledger_lock_and_load(text, jsonb) RESET plan_cache_mode;
