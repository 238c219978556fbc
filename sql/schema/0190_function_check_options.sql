-- Refuse flow and step options outside their bounds, naming the option:
-- the tables' CHECKs say the same, less clearly. A value beyond them
-- (a timeout of 2^31-1, say) would pass a bare CHECK and then make every
-- claim of the flow fail with integer overflow. NULL means "not given".
CREATE FUNCTION flowworker._check_options(
    p_where text, p_max_attempts int, p_base_delay int, p_timeout int, p_start_delay int
)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = ''
AS $$
DECLARE
    v_option pg_catalog.record;
BEGIN
    FOR v_option IN
        SELECT * FROM (VALUES ('max_attempts', p_max_attempts, 1, 1000),
                              ('base_delay', p_base_delay, 0, 86400),
                              ('timeout', p_timeout, 1, 604800),
                              ('start_delay', p_start_delay, 0, 2592000)) AS o(name, value, low, high)
        WHERE o.value NOT BETWEEN o.low AND o.high
    LOOP
        RAISE EXCEPTION '%: % must be between % and %, not %', p_where, v_option.name,
            v_option.low, v_option.high, v_option.value
            USING ERRCODE = '22023';
    END LOOP;
END;
$$;
