-- Apply many outcomes in one round trip: an output completes a task, an
-- error fails the attempt. Outcomes are applied in run_id order, so two
-- workers acknowledging overlapping runs lock them in the same order.
-- Returns, per input position (1-based), what complete_task or fail_task
-- said: 'completed', 'retry', 'failed' or 'stale'.
CREATE FUNCTION flowworker.ack_tasks(
    run_ids uuid[], step_slugs text[], task_indexes int[], attempts int[],
    outputs jsonb[], errors text[]
)
RETURNS TABLE (ord int, result text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    v pg_catalog.record;
BEGIN
    FOR v IN
        SELECT * FROM unnest(run_ids, step_slugs, task_indexes, attempts, outputs, errors)
            WITH ORDINALITY AS a(run_id, step_slug, task_index, attempt, output, error, ord)
        ORDER BY a.run_id, a.step_slug, a.task_index
    LOOP
        ord := v.ord;
        IF v.error IS NULL THEN
            result := CASE WHEN flowworker.complete_task(v.run_id, v.step_slug, v.task_index,
                                                         v.attempt, v.output)
                           THEN 'completed' ELSE 'stale' END;
        ELSE
            result := flowworker.fail_task(v.run_id, v.step_slug, v.task_index, v.attempt, v.error);
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;
