-- Limits an operator may change (UPDATE flowworker.config ...). Kept in a
-- table, not a GUC, so the roles that start runs cannot raise them.
CREATE TABLE flowworker.config (
    name text PRIMARY KEY,
    value bigint NOT NULL CHECK (value >= 0),
    description text NOT NULL
);

INSERT INTO flowworker.config (name, value, description) VALUES
    ('max_input_bytes', 1048576,
     'Largest flow input start_flow accepts, in bytes of jsonb (default 1 MiB).'),
    ('max_output_bytes', 1048576,
     'Largest task output complete_task accepts, in bytes of jsonb (default 1 MiB).'),
    ('notify', 1,
     '1: NOTIFY workers when work becomes visible; 0: workers find it by polling.'),
    ('max_map_tasks', 100000,
     'Most tasks one map step may start; a wider map fails its run (default 100,000).'),
    ('max_map_output_bytes', 16777216,
     'Largest combined output of a map step, in bytes of jsonb; a larger one fails its run '
     '(default 16 MiB).');
