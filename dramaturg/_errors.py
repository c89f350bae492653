"""The exception tree, split by who must act.

::

    DramaturgError
    ├── UserError            the user must fix an input; message names file, field and fix
    │   ├── ScenarioError    a scenario file or definition is malformed
    │   └── ConfigError      a CLI option, model spec or run setting is wrong
    └── RunError             something went wrong while running
        ├── BackendError     a model call failed (carries kind and retry_after)
        ├── ReplyParseError  a model reply did not parse; carries the raw text
        └── StoreError       the DuckDB store refused an operation
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from dramaturg._model import RateLimits

__all__ = [
    "BackendError",
    "BackendErrorKind",
    "ConfigError",
    "DramaturgError",
    "ReplyParseError",
    "RunError",
    "ScenarioError",
    "StoreError",
    "UserError",
]


class DramaturgError(Exception):
    """Base of every error dramaturg raises on purpose."""


class UserError(DramaturgError):
    """An input is wrong; the message tells the user what to change."""


class ScenarioError(UserError):
    """A scenario is malformed.

    Args:
        message: what is wrong and what was expected.
        source: the file (or built-in name) the scenario came from.
        field: dotted path of the offending field, when known.
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        where = f"{source}: " if source else ""
        prefix = f"{where}field '{field}': " if field else where
        super().__init__(prefix + message)


class ConfigError(UserError):
    """A run setting, CLI option or model spec is wrong."""


class RunError(DramaturgError):
    """Something failed while a run was in progress."""


BackendErrorKind = Literal[
    "rate_limit",  # 429
    "overloaded",  # 529 / 503
    "server",  # other 5xx
    "timeout",
    "connection",  # dropped or refused connection
    "malformed",  # a 200 whose body is not a valid reply
    "auth",  # 401 / 403
    "bad_request",  # 400 / 404 / 422: the request itself is wrong
    "unsupported",  # the server refuses a request feature (e.g. response_format)
    "budget",  # the run's budget would be exceeded
    "circuit_open",  # most recent calls failed even after a pause: stop, resume later
    "other",
]

RETRYABLE_KINDS: frozenset[str] = frozenset(
    {"rate_limit", "overloaded", "server", "timeout", "connection", "malformed"}
)


class BackendError(RunError):
    """A model call failed.

    Attributes:
        kind: what failed, which decides whether the gateway retries.
        retry_after: seconds the provider asked us to wait, if it said.
        status: the HTTP status, if there was one.
        rate_limits: the provider's rate-limit headers on the failed response (a
            ``dramaturg.RateLimits``), if it sent them.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: BackendErrorKind,
        retry_after: float | None = None,
        status: int | None = None,
        rate_limits: RateLimits | None = None,
    ):
        super().__init__(message)
        self.kind: BackendErrorKind = kind
        self.retry_after = retry_after
        self.status = status
        self.rate_limits = rate_limits

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


class ReplyParseError(RunError):
    """A model reply did not match the structure asked for.

    Attributes:
        raw: the reply text exactly as the model produced it.
    """

    def __init__(self, message: str, *, raw: str):
        super().__init__(message)
        self.raw = raw


class StoreError(RunError):
    """The store could not be opened, migrated or written."""
