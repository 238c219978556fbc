-- A queue's messages: all, visible now, held by a paused run (vt
-- 'infinity', resume_run gives them back), and the age of the oldest.
CREATE FUNCTION flowworker.queue_metrics(queue_name text)
RETURNS TABLE (queue_length bigint, visible_length bigint, oldest_msg_age_seconds double precision,
               paused_length bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT count(*),
                count(*) FILTER (WHERE vt <= now()),
                coalesce(extract(epoch FROM now() - min(enqueued_at)), 0)::double precision,
                count(*) FILTER (WHERE vt = ''infinity'')
         FROM flowworker.%I',
        'q_' || flowworker.check_slug(queue_name, 'queue name'));
END;
$$;
