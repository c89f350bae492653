"""Programmatic checks: plain typed Python functions over a turn and the episode spec."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dramaturg.evaluators._turns import FACT_TOKEN
from dramaturg.scenarios import Check, CheckContext, CheckResult, EpisodeSpec

__all__ = ["NamedResult", "run_checks", "user_consistency"]


@dataclass(frozen=True, slots=True)
class NamedResult:
    name: str
    passed: bool
    detail: str


def run_checks(checks: Sequence[Check], context: CheckContext) -> list[NamedResult]:
    """Run every check; a check's name is its function's name."""
    results = []
    for check in checks:
        outcome = check(context)
        result = outcome if isinstance(outcome, CheckResult) else CheckResult(bool(outcome))
        results.append(NamedResult(getattr(check, "__name__", repr(check)), result.passed, result.detail))
    return results


def user_consistency(spec: EpisodeSpec, turns: Sequence[tuple[str, str, bool]]) -> CheckResult:
    """Did the user simulator stay in character and state only facts it has?

    Args:
        turns: (role, content, role_flip) for the whole episode.
    """
    known = " ".join(
        [*(value for _, value in spec.hidden_facts), *(str(value) for _, value in spec.variables), spec.goal]
    )
    problems = []
    heard = ""
    for role, content, role_flip in turns:
        if role == "assistant":
            heard += " " + content
            continue
        if role_flip:
            problems.append(f"spoke as the assistant: {content[:60]!r}")
        for token in FACT_TOKEN.findall(content):
            if token not in known and token not in heard:
                problems.append(f"stated a fact it was not given: {token}")
    return CheckResult(not problems, "; ".join(problems))
