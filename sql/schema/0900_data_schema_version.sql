-- The schema versions this tree holds, as `flowworker migrate` records them
-- one migration at a time (sql/migrations); workers check the last row.
INSERT INTO flowworker.migrations (version, name, min_worker_version) VALUES
    (1, 'initial', 1),
    (2, 'hardening', 2),
    (3, 'care', 2),
    (4, 'flow_files', 2),
    (5, 'handler_control', 2),
    (6, 'run_lifecycle', 2),
    (7, 'operations', 2),
    (8, 'time_ordered_run_ids', 2);
