-- Refuse a payload over the configured limit, naming what it is.
CREATE FUNCTION flowworker._check_size(payload jsonb, limit_name text, what text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = ''
AS $$
DECLARE
    v_size int := pg_column_size(payload);
    v_limit bigint;
BEGIN
    SELECT c.value INTO v_limit FROM flowworker.config c WHERE c.name = limit_name;
    IF v_size > v_limit THEN
        RAISE EXCEPTION '% is % bytes, over the limit of % bytes', what, v_size, v_limit
            USING ERRCODE = '54000',
                  HINT = format('raise it with UPDATE flowworker.config SET value = ... '
                                'WHERE name = %L', limit_name);
    END IF;
END;
$$;
