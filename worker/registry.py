"""Import an application module and collect its flows by slug."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from flowworker.dsl import Flow
from flowworker.errors import AppImportError, ConfigurationError


def load_flows(module_name: str | None) -> dict[str, Flow]:
    """Import `module_name` once and return every top-level Flow by slug.

    The working directory is importable, as with `python -m`. Nothing the
    database says is ever imported: handlers come from this registry only.
    """
    if not module_name:
        raise ConfigurationError("no application module: pass --app MODULE or set FLOWWORKER_APP")
    _refuse_a_path(module_name)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppImportError(
            f"cannot import application module {module_name!r}: {_first_line(exc)}"
            f"{_where_looked(module_name, exc)}") from None
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


def _refuse_a_path(module_name: str) -> None:
    """`myapp/flows.py` is a file; Python imports `myapp.flows`."""
    if "/" not in module_name and os.sep not in module_name \
            and not module_name.endswith(".py"):
        return
    path = Path(module_name.removesuffix(".py")).resolve()
    cwd = Path.cwd()
    here = path.relative_to(cwd).parts if path.is_relative_to(cwd) else ()
    if here and all(part.isidentifier() for part in here):
        hint = f"try --app {'.'.join(here)}"  # importable from here, as `python -m` does
    else:
        root = _package_root(path)
        hint = f"try PYTHONPATH={root} --app {'.'.join(path.relative_to(root).parts)}"
    raise AppImportError(
        f"--app {module_name!r} is a file path, but --app (FLOWWORKER_APP) takes a module "
        f"name: {hint}")


def _package_root(module: Path) -> Path:
    """The folder to import `module` (a path without .py) from: above every
    package (a folder with __init__.py) that holds it."""
    root = module.parent
    while (root / "__init__.py").exists() and root.parent != root:
        root = root.parent
    return root


def _where_looked(module_name: str, exc: ImportError) -> str:
    """When the app's top-level package is not found (not one of its
    imports): where Python looked, and how to point it elsewhere."""
    top = module_name.split(".", maxsplit=1)[0]
    if not isinstance(exc, ModuleNotFoundError) or getattr(exc, "name", None) != top:
        return ""
    pythonpath = os.environ.get("PYTHONPATH")
    looked = f"PYTHONPATH={pythonpath}" if pythonpath else "PYTHONPATH (not set)"
    return (f" (looked in the working directory {os.getcwd()} and {looked}; run from the "
            f"folder that holds {top!r}, or add that folder to PYTHONPATH)")


def _first_line(exc: BaseException) -> str:
    """Errors are one line on stderr; a multi-line message keeps its first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def select_flows(flows: dict[str, Flow], slugs: list[str] | None,
                 source: str = "--flow") -> list[Flow]:
    """The flows named by slugs (all when empty), or a ConfigurationError
    naming the flag or variable the slugs came from."""
    if not slugs:
        return list(flows.values())
    unknown = [slug for slug in slugs if slug not in flows]
    if unknown:
        raise ConfigurationError(
            f"unknown flow {unknown[0]!r} ({source}); the app defines: "
            f"{', '.join(sorted(flows))}")
    return [flows[slug] for slug in slugs]
