-- Refuse the first payload over the configured size limit, or holding a
-- number that is tiny as jsonb and huge as text: 1e131071 is stored in a
-- few bytes and read back as 131,072 digits, so a few kilobytes of input
-- would become tens of megabytes at every claim (and 1e5000 is more digits
-- than Python's JSON decoder takes). Numbers must fit a double's range:
-- zero, or a magnitude between 1e-308 and 1e308.
-- p_what names a payload: a format with one %L filled from p_names (e.g.
-- 'the output of step %L' and the step slugs), or a plain text when
-- p_names is NULL.
CREATE FUNCTION flowworker._check_payloads(
    p_payloads jsonb[], p_names text[], p_what text, p_limit_name text
)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = ''
AS $$
DECLARE
    v_limit bigint;
    v_bad pg_catalog.record;
BEGIN
    SELECT c.value INTO v_limit FROM flowworker.config c WHERE c.name = p_limit_name;
    SELECT x.name, pg_column_size(x.payload) AS size INTO v_bad
    FROM unnest(p_payloads, p_names) AS x(payload, name)
    WHERE pg_column_size(x.payload) > v_limit
       OR jsonb_path_exists(x.payload, 'strict $.** ? (@.type() == "number" && '
                            '(@ > 1e308 || @ < -1e308 || (@ != 0 && @ < 1e-308 && @ > -1e-308)))')
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_bad.size > v_limit THEN
        RAISE EXCEPTION '% is % bytes, over the limit of % bytes', format(p_what, v_bad.name),
            v_bad.size, v_limit
            USING ERRCODE = '54000',
                  HINT = format('raise it with UPDATE flowworker.config SET value = ... '
                                'WHERE name = %L', p_limit_name);
    END IF;
    RAISE EXCEPTION '% holds a number beyond the limit: JSON numbers must be 0 or between '
                    '1e-308 and 1e308 in magnitude', format(p_what, v_bad.name)
        USING ERRCODE = '22003',
              HINT = 'such numbers grow to thousands of digits as text; send them as strings';
END;
$$;
