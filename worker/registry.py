"""Import an application module and collect its flows by slug."""

from __future__ import annotations

import importlib
import os
import sys

from flowworker.dsl import Flow
from flowworker.errors import AppImportError, ConfigurationError


def load_flows(module_name: str | None) -> dict[str, Flow]:
    """Import `module_name` once and return every top-level Flow by slug.

    The working directory is importable, as with `python -m`. Nothing the
    database says is ever imported: handlers come from this registry only.
    """
    if not module_name:
        raise ConfigurationError("no application module: pass --app MODULE or set FLOWWORKER_APP")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppImportError(
            f"cannot import application module {module_name!r}: {_first_line(exc)}") from None
    except ConfigurationError:
        raise
    except Exception as exc:
        raise AppImportError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    flows: dict[str, Flow] = {}
    for value in vars(module).values():
        if isinstance(value, Flow):
            if value.slug in flows and flows[value.slug] is not value:
                raise ConfigurationError(f"{module_name}: two flows are named {value.slug!r}")
            flows[value.slug] = value
    if not flows:
        raise ConfigurationError(f"{module_name} defines no Flow at its top level")
    return flows


def _first_line(exc: BaseException) -> str:
    """Errors are one line on stderr; a multi-line message keeps its first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def select_flows(flows: dict[str, Flow], slugs: list[str] | None) -> list[Flow]:
    """The flows named by slugs (all when empty), or a ConfigurationError."""
    if not slugs:
        return list(flows.values())
    unknown = [slug for slug in slugs if slug not in flows]
    if unknown:
        raise ConfigurationError(
            f"unknown flow {unknown[0]!r}; the app defines: {', '.join(sorted(flows))}")
    return [flows[slug] for slug in slugs]
