-- The allow-list every slug passes before it can reach dynamic SQL.
CREATE FUNCTION flowworker.check_slug(slug text, kind text DEFAULT 'slug')
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = ''
AS $$
BEGIN
    IF slug IS NULL OR slug !~ '^[a-z][a-z0-9_]{0,47}$' THEN
        RAISE EXCEPTION 'invalid %: %', kind, coalesce(quote_literal(slug), 'NULL')
            USING ERRCODE = '22023',
                  HINT = 'slugs match ^[a-z][a-z0-9_]{0,47}$';
    END IF;
    RETURN slug;
END;
$$;
