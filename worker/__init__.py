"""flowworker: durable DAG workflows on PostgreSQL."""

from flowworker.dsl import Context, Flow
from flowworker.errors import FlowworkerError

__all__ = ["Context", "Flow", "FlowworkerError"]
