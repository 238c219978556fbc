CREATE TABLE flowworker.workers (
    worker_id uuid PRIMARY KEY,
    flow_slug text NOT NULL,
    hostname text NOT NULL,
    pid int NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at timestamptz
);
