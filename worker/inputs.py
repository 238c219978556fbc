"""A handler that declares its input type gets its input checked before it runs.

The first parameter's annotation decides: a pydantic model, a TypedDict or a
dataclass is validated (a model or dataclass arrives as an instance, a
TypedDict as the checked dict); anything else (dict, list, Any, nothing) is
passed through untouched, at no cost. An invalid input fails the task at
once with the validation error: three identical attempts would not fix it.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

import pydantic
import typing_extensions


def declared_type(handler: Callable[..., Any]) -> Any:
    """The annotation of the handler's first parameter, or None."""
    try:
        params = list(inspect.signature(handler).parameters.values())
        hints = typing.get_type_hints(handler)
    except (TypeError, ValueError, NameError):  # no signature, or a name that does not resolve
        return None
    return hints.get(params[0].name) if params else None


def adapter_for(handler: Callable[..., Any]) -> pydantic.TypeAdapter[Any] | None:
    """A validator for the handler's declared input type, when it declares one.
    Raises ValueError when pydantic cannot check that type (e.g. a
    typing.TypedDict before Python 3.12), so the definition fails, not a task."""
    kind = declared_type(handler)
    checked = ((isinstance(kind, type) and (issubclass(kind, pydantic.BaseModel)
                                           or dataclasses.is_dataclass(kind)))
               or typing_extensions.is_typeddict(kind))
    if not checked:
        return None
    try:
        return pydantic.TypeAdapter(kind)
    except pydantic.PydanticUserError as exc:
        raise ValueError(f"its input type {kind.__name__} cannot be checked: "
                         f"{str(exc).splitlines()[0]}") from None


def describe(exc: pydantic.ValidationError) -> str:
    """One line per problem: `field.path: message (input: value type)`."""
    problems = [f"{'.'.join(str(p) for p in e['loc']) or '(input)'}: {e['msg']}"
                for e in exc.errors(include_url=False)]
    return f"invalid input for {exc.title}: " + "; ".join(problems)
