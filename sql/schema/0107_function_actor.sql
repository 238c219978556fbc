-- Who makes a change, for the run history: the session's
-- `SET flowworker.actor = 'alice'` (an application names its user), else
-- its login role (inside a SECURITY DEFINER function current_user is the
-- owner; session_user is who connected).
CREATE FUNCTION flowworker._actor()
RETURNS text
LANGUAGE sql STABLE
SET search_path = ''
AS $$
    SELECT coalesce(nullif(pg_catalog.current_setting('flowworker.actor', true), ''),
                    session_user::pg_catalog.text);
$$;
