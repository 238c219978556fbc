"""Acceptance tests: `flowworker run` as a real subprocess, real signals and faults."""
