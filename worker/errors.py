"""One exception tree; each class's docstring is its default message.

`exit_code` is what the CLI exits with (ARCHITECTURE.md §4):
0 ok, 1 runtime failure, 2 usage or bad configuration, 3 database
unreachable, 4 schema missing/outdated or flow shape mismatch.
"""

from __future__ import annotations


class FlowworkerError(Exception):
    """flowworker failed."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(FlowworkerError):
    """Bad configuration."""

    exit_code = 2


class DefinitionError(ConfigurationError):
    """The flow definition is invalid."""


class AppImportError(ConfigurationError):
    """The application module could not be imported."""


class DatabaseRefusedError(ConfigurationError):
    """The database refused the connection: no such database or role, wrong
    credentials, or SSL the server does not offer."""


class DatabaseUnreachableError(FlowworkerError):
    """The database cannot be reached."""

    exit_code = 3


class SchemaError(FlowworkerError):
    """The flowworker schema is missing or at another version."""

    exit_code = 4


class ShapeMismatchError(SchemaError):
    """The flow in the database has another shape than the code."""


class DatabaseError(FlowworkerError):
    """The database refused the request."""


class MigrateLockTimeoutError(FlowworkerError):
    """Another session held the migrate lock past the lock timeout."""


class UnknownFlowError(FlowworkerError):
    """No flow with this slug is defined in the database."""


class UnknownRunError(FlowworkerError):
    """No run with this run_id exists."""


class UnknownStepError(FlowworkerError):
    """The run's flow has no such step (or no step waits with that token)."""


class RunStateError(FlowworkerError):
    """The run is not in a status this action applies to."""


class InvalidInputError(FlowworkerError):
    """The database rejected an argument: a slug, a run_id or the flow input."""

    exit_code = 2
