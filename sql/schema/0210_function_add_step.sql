-- Add a step to a flow. Re-adding the same step is a no-op (options are
-- updated); a different type or deps under an existing step slug is an
-- error, and so is a new step in a flow that already has runs.
CREATE FUNCTION flowworker.add_step(
    flow_slug text,
    step_slug text,
    deps text[] DEFAULT '{}',
    max_attempts int DEFAULT NULL,
    base_delay int DEFAULT NULL,
    timeout int DEFAULT NULL,
    start_delay int DEFAULT NULL,
    step_type text DEFAULT 'single',
    options text[] DEFAULT NULL,
    fail_on text[] DEFAULT NULL
)
RETURNS flowworker.steps
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    v_step flowworker.steps;
    v_deps pg_catalog.text[] := ARRAY(SELECT DISTINCT d FROM unnest(coalesce(add_step.deps, '{}')) d ORDER BY d);
    v_old_deps pg_catalog.text[];
    v_missing pg_catalog.text;
BEGIN
    PERFORM flowworker.check_slug(add_step.flow_slug, 'flow slug');
    PERFORM flowworker.check_slug(add_step.step_slug, 'step slug');
    PERFORM flowworker.check_slug(d, 'dependency slug') FROM unnest(v_deps) d;
    PERFORM flowworker._check_options(format('step %s.%s', add_step.flow_slug, add_step.step_slug),
                                      add_step.max_attempts, add_step.base_delay,
                                      add_step.timeout, add_step.start_delay);
    IF add_step.step_type IS NULL OR add_step.step_type NOT IN ('single', 'map', 'wait') THEN
        RAISE EXCEPTION 'step %.%: step_type must be single, map or wait, not %',
            add_step.flow_slug, add_step.step_slug, coalesce(add_step.step_type, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF (add_step.options IS NOT NULL OR add_step.fail_on IS NOT NULL)
       AND add_step.step_type <> 'wait' THEN
        RAISE EXCEPTION 'step %.%: options and fail_on belong to wait steps (approval gates)',
            add_step.flow_slug, add_step.step_slug USING ERRCODE = '22023';
    END IF;
    IF cardinality(add_step.options) = 0 OR NOT add_step.fail_on <@ add_step.options
       OR add_step.fail_on IS NOT NULL AND add_step.options IS NULL THEN
        RAISE EXCEPTION 'step %.%: a gate needs options, and fail_on must be some of them',
            add_step.flow_slug, add_step.step_slug USING ERRCODE = '22023';
    END IF;
    IF add_step.step_type = 'map' AND cardinality(v_deps) > 1 THEN
        RAISE EXCEPTION 'map step %.% has % deps; a map step has at most one',
            add_step.flow_slug, add_step.step_slug, cardinality(v_deps) USING ERRCODE = '22023';
    END IF;
    -- Serialise definitions of one flow, so concurrent migrations agree.
    PERFORM 1 FROM flowworker.flows f WHERE f.flow_slug = add_step.flow_slug FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'flow % does not exist; call create_flow first', quote_literal(add_step.flow_slug)
            USING ERRCODE = 'P0002';
    END IF;

    SELECT * INTO v_step FROM flowworker.steps s
    WHERE s.flow_slug = add_step.flow_slug AND s.step_slug = add_step.step_slug;
    IF FOUND THEN
        v_old_deps := ARRAY(SELECT d.dep_slug FROM flowworker.deps d
                            WHERE d.flow_slug = add_step.flow_slug AND d.step_slug = add_step.step_slug
                            ORDER BY d.dep_slug);
        IF v_step.step_type <> add_step.step_type THEN
            RAISE EXCEPTION 'flow % changed shape: step % is % in the database, % in the definition',
                quote_literal(add_step.flow_slug), quote_literal(add_step.step_slug),
                v_step.step_type, add_step.step_type
                USING ERRCODE = '22023', HINT = 'give the changed flow a new slug';
        END IF;
        IF v_old_deps <> v_deps THEN
            RAISE EXCEPTION 'flow % changed shape: step % depends on {%} in the database, {%} in the definition',
                quote_literal(add_step.flow_slug), quote_literal(add_step.step_slug),
                array_to_string(v_old_deps, ','), array_to_string(v_deps, ',')
                USING ERRCODE = '22023', HINT = 'give the changed flow a new slug';
        END IF;
        UPDATE flowworker.steps s
        SET max_attempts = add_step.max_attempts, base_delay = add_step.base_delay,
            timeout = add_step.timeout, start_delay = add_step.start_delay,
            options = add_step.options, fail_on = add_step.fail_on
        WHERE s.flow_slug = add_step.flow_slug AND s.step_slug = add_step.step_slug
          AND (s.max_attempts, s.base_delay, s.timeout, s.start_delay, s.options, s.fail_on)
              IS DISTINCT FROM (add_step.max_attempts, add_step.base_delay, add_step.timeout,
                                add_step.start_delay, add_step.options, add_step.fail_on)
        RETURNING * INTO v_step;
        IF NOT FOUND THEN
            SELECT * INTO v_step FROM flowworker.steps s
            WHERE s.flow_slug = add_step.flow_slug AND s.step_slug = add_step.step_slug;
        END IF;
        RETURN v_step;
    END IF;

    IF EXISTS (SELECT 1 FROM flowworker.runs r WHERE r.flow_slug = add_step.flow_slug) THEN
        RAISE EXCEPTION 'flow % changed shape: step % is new, but the flow already has runs',
            quote_literal(add_step.flow_slug), quote_literal(add_step.step_slug)
            USING ERRCODE = '22023', HINT = 'give the changed flow a new slug';
    END IF;
    SELECT d INTO v_missing FROM unnest(v_deps) d
    WHERE NOT EXISTS (SELECT 1 FROM flowworker.steps s
                      WHERE s.flow_slug = add_step.flow_slug AND s.step_slug = d)
    LIMIT 1;
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'step %.% depends on unknown step %', add_step.flow_slug,
            add_step.step_slug, quote_literal(v_missing) USING ERRCODE = '22023';
    END IF;

    INSERT INTO flowworker.steps AS s (flow_slug, step_slug, step_type, step_index, deps_count,
                                       max_attempts, base_delay, timeout, start_delay,
                                       options, fail_on)
    SELECT add_step.flow_slug, add_step.step_slug, add_step.step_type,
           coalesce(max(s2.step_index) + 1, 0), cardinality(v_deps),
           add_step.max_attempts, add_step.base_delay, add_step.timeout, add_step.start_delay,
           add_step.options, add_step.fail_on
    FROM flowworker.steps s2 WHERE s2.flow_slug = add_step.flow_slug
    RETURNING * INTO v_step;
    INSERT INTO flowworker.deps (flow_slug, dep_slug, step_slug)
    SELECT add_step.flow_slug, d, add_step.step_slug FROM unnest(v_deps) d;
    RETURN v_step;
END;
$$;
