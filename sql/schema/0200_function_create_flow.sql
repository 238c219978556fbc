-- Define a flow and its queue. Idempotent: options are updated in place,
-- the shape (steps, deps, types) is defined by add_step.
CREATE FUNCTION flowworker.create_flow(
    flow_slug text,
    max_attempts int DEFAULT 3,
    base_delay int DEFAULT 1,
    timeout int DEFAULT 60
)
RETURNS flowworker.flows
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    v_flow flowworker.flows;
BEGIN
    PERFORM flowworker.check_slug(create_flow.flow_slug, 'flow slug');
    PERFORM flowworker._check_options(format('flow %L', create_flow.flow_slug),
                                      create_flow.max_attempts, create_flow.base_delay,
                                      create_flow.timeout, NULL);
    INSERT INTO flowworker.flows AS f (flow_slug, max_attempts, base_delay, timeout)
    VALUES (create_flow.flow_slug, create_flow.max_attempts, create_flow.base_delay,
            create_flow.timeout)
    ON CONFLICT (flow_slug) DO UPDATE
        SET max_attempts = excluded.max_attempts,
            base_delay = excluded.base_delay,
            timeout = excluded.timeout
        WHERE (f.max_attempts, f.base_delay, f.timeout)
              IS DISTINCT FROM (excluded.max_attempts, excluded.base_delay, excluded.timeout)
    RETURNING * INTO v_flow;
    IF NOT FOUND THEN
        SELECT * INTO v_flow FROM flowworker.flows f WHERE f.flow_slug = create_flow.flow_slug;
    END IF;
    PERFORM flowworker.queue_create(create_flow.flow_slug);
    RETURN v_flow;
END;
$$;
