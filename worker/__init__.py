"""flowworker: durable DAG workflows on PostgreSQL."""

from flowworker.control import Fail, RetryAfter
from flowworker.dsl import Context, Flow
from flowworker.errors import FlowworkerError

__all__ = ["Context", "Fail", "Flow", "FlowworkerError", "RetryAfter"]
