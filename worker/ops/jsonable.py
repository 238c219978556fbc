"""The JSON form of flowworker.ops' dataclasses: field names as keys (the
keys documented in docs/operating.md), times in ISO 8601, UUIDs as strings."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any
from uuid import UUID


def jsonable(value: Any) -> Any:
    """value with dataclasses as dicts and times and UUIDs as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value
