"""What a scenario's programmatic check receives and returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dramaturg.scenarios._dsl import EpisodeSpec

__all__ = ["Check", "CheckContext", "CheckResult"]


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What a check sees: the episode spec, the dialogue before the reply, and the reply."""

    spec: EpisodeSpec
    history: tuple[tuple[str, str], ...]
    reply: str

    def user_said(self, text: str) -> bool:
        """Whether the user has already said ``text`` (case-insensitive) in this episode."""
        lowered = text.lower()
        return any(role == "user" and lowered in content.lower() for role, content in self.history)


@dataclass(frozen=True, slots=True)
class CheckResult:
    passed: bool
    detail: str = ""


Check = Callable[[CheckContext], bool | CheckResult]
