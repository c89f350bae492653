"""What a scenario's programmatic check receives and returns."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dramaturg.scenarios._dsl import EpisodeSpec

__all__ = ["DEFAULT_CHECK_TIMEOUT_S", "Check", "CheckContext", "CheckResult", "ToolUse", "signature_problem"]

# How long one check may take on one reply when its scenario does not say.
DEFAULT_CHECK_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class ToolUse:
    """One tool call as a check sees it.

    Attributes:
        name: the tool the assistant called.
        arguments: the arguments it passed (as parsed JSON; ``{}`` when they were not JSON).
        status: ``ok``, ``invalid`` (unknown tool or arguments that fail the schema: it never
            ran) or ``error`` (the tool raised).
        result: what the assistant read back.
    """

    name: str
    arguments: dict[str, Any]
    status: str
    result: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What a check sees: the episode spec, the dialogue before the reply, and the reply.

    In a scenario with tools it also sees the reply's tool calls, those of the assistant's
    earlier turns, and the environment as the reply left it (trajectory and final-state
    checks, like tau2-bench's environment assertions).
    """

    spec: EpisodeSpec
    history: tuple[tuple[str, str], ...]
    reply: str
    tool_calls: tuple[ToolUse, ...] = ()
    earlier_tool_calls: tuple[ToolUse, ...] = ()
    environment: Any = None

    def user_said(self, text: str) -> bool:
        """Whether the user has already said ``text`` (case-insensitive) in this episode."""
        lowered = text.lower()
        return any(role == "user" and lowered in content.lower() for role, content in self.history)

    def called(self, tool: str, *, before: str | None = None) -> bool:
        """Whether a valid call to ``tool`` was made in this episode up to this reply.

        With ``before``, whether it came before this reply's first call to ``before``
        (``ctx.called("lookup_order", before="issue_refund")``).
        """
        calls = [*self.earlier_tool_calls, *self.tool_calls]
        if before is not None:
            firsts = [i for i, call in enumerate(calls) if call.name == before]
            calls = calls[: firsts[0]] if firsts else calls
        return any(call.name == tool and call.ok for call in calls)


@dataclass(frozen=True, slots=True)
class CheckResult:
    passed: bool
    detail: str = ""


Check = Callable[[CheckContext], bool | CheckResult]


_EXPECTED = "def NAME(context: CheckContext) -> bool | CheckResult"


def signature_problem(check: Check) -> str | None:
    """What is wrong with a check's signature or annotations, or None when it can be called.

    Checked when the scenario is defined, so a wrong check fails before the run writes or
    pays for anything. Missing annotations are allowed (the result is checked at run time);
    present ones must say what a check takes and returns.
    """
    try:
        signature = inspect.signature(check)
    except (TypeError, ValueError):
        return None  # a builtin or C function without a signature: judged when it runs
    try:
        signature.bind(None)
    except TypeError:
        return f"takes {signature}; expected {_EXPECTED}"
    hints = _hints(check)
    parameters = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    first = parameters[0] if parameters else None
    if first is not None and first.kind is not first.VAR_POSITIONAL:
        takes = hints.get(first.name, first.annotation)
        if not _names_type(takes, {"CheckContext", "Any", "object"}):
            return f"its parameter '{first.name}' is annotated {_shown(takes)}; expected {_EXPECTED}"
    returns = hints.get("return", signature.return_annotation)
    if not _names_type(returns, {"bool", "CheckResult"}):
        return f"returns {_shown(returns)}; expected {_EXPECTED}"
    return None


def _hints(check: Check) -> dict[str, Any]:
    # String annotations (from __future__ import annotations) resolve against the check's
    # module; when they cannot, the raw strings are judged by name.
    try:
        return typing.get_type_hints(check)
    except Exception:  # noqa: BLE001 - user code: an unresolvable annotation is not our error
        return {}


def _names_type(annotation: Any, allowed: set[str]) -> bool:
    """Whether every member of ``annotation`` (a type, a union or its source text) is allowed."""
    if annotation is inspect.Parameter.empty:
        return True
    if isinstance(annotation, str):
        return all(part.strip().split(".")[-1] in allowed for part in annotation.split("|"))
    members = typing.get_args(annotation) if typing.get_origin(annotation) in _UNIONS else (annotation,)
    return all(getattr(member, "__name__", repr(member)) in allowed for member in members)


_UNIONS = (typing.Union, types.UnionType)


def _shown(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", repr(annotation)).replace("typing.", "")
