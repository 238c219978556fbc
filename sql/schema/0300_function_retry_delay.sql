-- Seconds before attempt n+1 after attempt n failed: base_delay * 2^(n-1),
-- capped at one hour so a long retry chain still comes back the same day.
CREATE FUNCTION flowworker.retry_delay(base_delay int, attempt int)
RETURNS int
LANGUAGE sql IMMUTABLE
SET search_path = ''
AS $$
    SELECT least(base_delay::numeric * power(2::numeric, least(greatest(attempt, 1) - 1, 40)), 3600)::int;
$$;
