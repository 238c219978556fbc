"""Flow definitions: `Flow`, its `step` and `map` decorators, and `Context`."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from uuid import UUID

import pydantic

from flowworker.errors import DefinitionError
from flowworker.inputs import adapter_for

SLUG_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,47}$")

Handler = Callable[..., Any]
RetryOn = type[BaseException] | Iterable[type[BaseException]] | None
Options = tuple[str, ...] | None
H = TypeVar("H", bound=Handler)
StepType = Literal["single", "map", "wait"]


@dataclass(frozen=True)
class Context:
    """What a handler knows about the task it runs."""

    run_id: UUID
    flow_slug: str
    step_slug: str
    task_index: int
    attempt: int
    flow_input: Any
    worker_id: UUID


@dataclass(frozen=True)
class Step:
    """One step of a flow: its handler, dependencies and options."""

    slug: str
    handler: Handler | None  # None for a wait step: a signal completes it, no handler
    deps: tuple[str, ...]
    step_type: StepType = "single"
    max_attempts: int | None = None
    base_delay: int | None = None
    timeout: int | None = None
    start_delay: int | None = None
    # Exceptions that retry; any other fails the task at once. None: all retry.
    retry_on: tuple[type[BaseException], ...] | None = None
    # A wait step that is an approval gate: the options a signal chooses from,
    # and those that fail the run.
    options: tuple[str, ...] | None = None
    fail_on: tuple[str, ...] | None = None

    @functools.cached_property
    def is_async(self) -> bool:
        # Asked twice per task; inspect's check costs a microsecond each time.
        return inspect.iscoroutinefunction(self.handler)

    @functools.cached_property
    def input_adapter(self) -> pydantic.TypeAdapter[Any] | None:
        """Checks the input when the handler declares a model type (inputs.py)."""
        return None if self.handler is None else adapter_for(self.handler)

    def retries(self, exc: BaseException) -> bool:
        """Whether this exception fails only the attempt (not the task)."""
        return self.retry_on is None or isinstance(exc, self.retry_on)


def check_slug(slug: object, what: str) -> str:
    """Return slug if it passes the allow-list, else raise DefinitionError."""
    if not isinstance(slug, str) or not SLUG_PATTERN.match(slug):
        raise DefinitionError(f"invalid {what} {slug!r}: slugs match {SLUG_PATTERN.pattern}")
    return slug


# The bounds of each option, as the database enforces them (sql/schema/0190):
# beyond them a claim's arithmetic would overflow.
OPTION_BOUNDS = {
    "max_attempts": (1, 1000),
    "base_delay": (0, 86400),  # seconds: a day
    "timeout": (1, 604800),  # seconds: a week
    "start_delay": (0, 2592000),  # seconds: 30 days
}


def _check_option(name: str, value: int | None, where: str) -> None:
    low, high = OPTION_BOUNDS[name]
    # bool is an int subclass, but `timeout=True` is a mistake, not one second.
    if value is not None and (type(value) is not int or not low <= value <= high):
        raise DefinitionError(
            f"{where}: {name} must be an integer between {low} and {high}, not {value!r}")


class Flow:
    """A DAG of steps. Steps are added by decorating handlers, deps first."""

    def __init__(self, slug: str, *, max_attempts: int = 3, base_delay: int = 1,
                 timeout: int = 60) -> None:
        self.slug = check_slug(slug, "flow slug")
        where = f"flow {slug!r}"
        _check_option("max_attempts", max_attempts, where)
        _check_option("base_delay", base_delay, where)
        _check_option("timeout", timeout, where)
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.timeout = timeout
        self.steps: dict[str, Step] = {}

    def __repr__(self) -> str:
        return f"Flow({self.slug!r}, steps={list(self.steps)})"

    def step(self, *, slug: str | None = None, depends_on: Iterable[str | Handler] = (),
             max_attempts: int | None = None, base_delay: int | None = None,
             timeout: int | None = None, start_delay: int | None = None,
             retry_on: RetryOn = None) -> Callable[[H], H]:
        """Register a handler as a `single` step; it runs once per run.
        retry_on: the exceptions that retry (any other fails the task at once)."""
        def decorate(handler: H) -> H:
            step_slug = slug or self._name_of(handler)
            deps = self._resolve_deps(step_slug, depends_on)
            self._add(Step(step_slug, handler, deps, "single", max_attempts, base_delay,
                           timeout, start_delay, self._retry_on(step_slug, retry_on)))
            return handler
        return decorate

    def map(self, *, over: str | Handler | None = None, slug: str | None = None,
            max_attempts: int | None = None, base_delay: int | None = None,
            timeout: int | None = None, start_delay: int | None = None,
            retry_on: RetryOn = None) -> Callable[[H], H]:
        """Register a handler as a `map` step: one task per element of the
        array that step `over` returns (or of the flow input when None)."""
        def decorate(handler: H) -> H:
            step_slug = slug or self._name_of(handler)
            # A list given as `over` is checked as deps, so two of them are
            # reported as "a map step with 2 deps" rather than a bad name.
            sources = over if isinstance(over, list | tuple) else [] if over is None else [over]
            deps = self._resolve_deps(step_slug, sources)
            self._add(Step(step_slug, handler, deps, "map", max_attempts, base_delay,
                           timeout, start_delay, self._retry_on(step_slug, retry_on)))
            return handler
        return decorate

    def wait(self, slug: str, *, depends_on: Iterable[str | Handler] = (),
             timeout: int | None = None, options: Iterable[str] | None = None,
             fail_on: Iterable[str] | None = None) -> str:
        """Define a wait step: no handler; once its dependencies complete it
        waits for flowworker.signal() (or signal_token()), whose payload
        becomes its output. With `timeout` (seconds) a wait that gets no
        signal in time fails its run. With `options` it is an approval gate:
        the payload's "option" must be one of them; those in `fail_on` fail
        the run, the payload's "note" its error. Returns the step's slug,
        for other steps' depends_on."""
        deps = self._resolve_deps(slug, depends_on)
        gate = self._gate(slug, options, fail_on)
        self._add(Step(slug, None, deps, "wait", timeout=timeout, options=gate[0],
                       fail_on=gate[1]))
        return slug

    def _gate(self, slug: str, options: Iterable[str] | None,
              fail_on: Iterable[str] | None) -> tuple[Options, Options]:
        where = f"flow {self.slug!r}: wait step {slug!r}"
        chosen = None if options is None else tuple(options)
        failing = None if fail_on is None else tuple(fail_on)
        for option in (*(chosen or ()), *(failing or ())):
            check_slug(option, f"option of {where}:")
        if chosen == ():
            raise DefinitionError(f"{where}: options must not be empty")
        if failing and not set(failing) <= set(chosen or ()):
            raise DefinitionError(f"{where}: fail_on {list(failing)} must be some of its "
                                  f"options {list(chosen or ())}")
        return chosen, failing

    def _retry_on(self, step_slug: str,
                  retry_on: RetryOn) -> tuple[type[BaseException], ...] | None:
        if retry_on is None:
            return None
        kinds = (retry_on,) if isinstance(retry_on, type) else tuple(retry_on)
        if not all(isinstance(k, type) and issubclass(k, BaseException) for k in kinds):
            raise DefinitionError(f"flow {self.slug!r}: step {step_slug!r}: retry_on must be "
                                  f"exception classes, not {retry_on!r}")
        return kinds

    def timeout_of(self, step_slug: str) -> int:
        """The step's timeout in seconds, else the flow's."""
        return self.steps[step_slug].timeout or self.timeout

    def _resolve_deps(self, step_slug: str, depends_on: Iterable[str | Handler]) -> tuple[str, ...]:
        if isinstance(depends_on, str):
            depends_on = [depends_on]
        deps: list[str] = []
        for dep in depends_on:
            name = dep if isinstance(dep, str) else self._slug_of(dep, step_slug)
            if name == step_slug:
                raise DefinitionError(
                    f"flow {self.slug!r}: step {step_slug!r} depends on itself (a cycle)")
            if name not in self.steps:
                raise DefinitionError(
                    f"flow {self.slug!r}: step {step_slug!r} depends on unknown step {name!r}"
                    " (define a step after the steps it depends on; this also rules out cycles)")
            if name not in deps:
                deps.append(name)
        return tuple(deps)

    def _name_of(self, handler: object) -> str:
        if not callable(handler):
            raise DefinitionError(
                f"flow {self.slug!r}: a step handler must be callable, not {handler!r}")
        return str(getattr(handler, "__name__", ""))

    def _slug_of(self, handler: Handler, step_slug: str) -> str:
        for step in self.steps.values():
            if step.handler is handler:
                return step.slug
        name = getattr(handler, "__name__", repr(handler))
        raise DefinitionError(
            f"flow {self.slug!r}: step {step_slug!r} depends on {name!r}, "
            "which is not a step of this flow")

    def _add(self, step: Step) -> None:
        where = f"flow {self.slug!r}: step {step.slug!r}"
        check_slug(step.slug, f"step slug in flow {self.slug!r}:")
        if step.slug in self.steps:
            raise DefinitionError(f"{where} is defined twice")
        if step.step_type == "map" and len(step.deps) > 1:
            raise DefinitionError(f"{where} is a map step with {len(step.deps)} deps; at most 1")
        for name in OPTION_BOUNDS:
            _check_option(name, getattr(step, name), where)
        if step.step_type != "wait" and not callable(step.handler):
            raise DefinitionError(f"{where}: the handler is not callable")
        try:
            step.input_adapter  # noqa: B018 - built now, so a bad type fails the definition
        except ValueError as exc:
            raise DefinitionError(f"{where}: {exc}") from None
        self.steps[step.slug] = step
