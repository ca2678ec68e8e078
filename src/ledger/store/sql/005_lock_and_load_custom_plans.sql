-- Plan ledger_lock_and_load's statements for each call's own keys. Left to the plan cache, PL/pgSQL
-- keeps a generic plan after five calls; built while the tables are tiny, that plan looked up event
-- ids through events_tenant_position (tenant_id, then a filter on event_id) instead of the unique
-- (tenant_id, event_id) index, so each lookup read all of a tenant's events and batched appends
-- slowed quadratically as the store grew (bench/RESULTS.md). Custom plans cost a little planning
-- per call and always take the unique indexes.
ALTER FUNCTION ledger_lock_and_load(text, jsonb) SET plan_cache_mode = force_custom_plan;
