-- Run history, append-only, written by the functions that change a run in
-- the same transaction as the change (docs/runs.md): a run started, ended,
-- paused, resumed, retried or cancelled (with its reason); a step waiting,
-- signalled, timed out; every failed attempt with its error. A task that
-- succeeds writes none (its row says it all, and the task path stays as
-- fast as it was). Never payloads: inputs, outputs and signal payloads stay
-- in their rows. `actor` is `SET flowworker.actor = '...'` of the session
-- that made the change, else its login role.
CREATE TABLE flowworker.events (
    event_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id uuid NOT NULL,
    step_slug text,
    task_index int,
    attempt int,
    event text NOT NULL,
    detail jsonb,
    actor text,
    at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX events_run_idx ON flowworker.events (run_id, event_id);
