-- Retention queries of the worker (flowworker.daemon.maintenance.prune),
-- asyncpg parameters; may_prune, which has none, serves flowworker.ops too.

-- name: may_prune
-- Only the schema's owner may call flowworker.prune (no group role has it).
SELECT has_function_privilege('flowworker.prune(interval, int)', 'EXECUTE')

-- name: prune_batch
-- One batch of flowworker.prune, unless another worker's batch is running:
-- NULL then. The lock is the transaction's, so it ends with the batch and
-- never stays behind on a pooled connection; a worker that finds it taken
-- leaves the round to the worker that holds it.
SELECT CASE WHEN pg_try_advisory_xact_lock(hashtext('flowworker.prune'))
            THEN flowworker.prune($1::interval, $2::int) END
