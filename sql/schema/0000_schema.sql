-- flowworker: durable DAG workflows. Every state transition is a function here.
--
-- Lock order, followed by every function that takes more than one lock:
--   run -> step state -> task -> message
-- start_tasks is the one exception: it locks messages first, then tasks and
-- runs with SKIP LOCKED only, so it never waits and cannot deadlock.
--
-- Every function pins search_path = '' and qualifies every name.
CREATE SCHEMA flowworker;
