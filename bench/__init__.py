"""`make bench`: flowworker against PgQueuer and a pgbench ceiling, on one
throwaway PostgreSQL cluster, in one run. See docs/performance.md."""
