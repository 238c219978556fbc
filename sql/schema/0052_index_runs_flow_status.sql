-- Runs of a flow by status, newest first, for every run that is not
-- completed: those still going (and, with later statuses, paused or
-- waiting), failed and cancelled. `flowworker status` counts them and
-- `flowworker runs list --status` pages through them without reading the
-- completed runs, which are nearly all of the table.
-- What it costs the task path: one entry when a run starts, and the update
-- that ends a run is no longer HOT (status is indexed here), so it adds
-- entries to the other two indexes of runs; a completed run adds none here.
-- Updates while a run goes on (remaining_steps) stay HOT. Measured in
-- docs/performance.md, "Retention".
CREATE INDEX runs_flow_status_idx ON flowworker.runs (flow_slug, status, started_at)
    WHERE status <> 'completed';
