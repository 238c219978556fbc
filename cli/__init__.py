"""The `flowworker` command line."""
