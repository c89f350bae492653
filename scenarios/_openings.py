"""How a recipe opens its episodes, declared on a scenario as ``Scenario(opening=...)``.

Episode ``i`` of a run takes item ``i`` of the opening's list (cycling when the run has more
episodes than items), so every seed, topic or dialogue is used once before any repeats.

- :class:`SeedRequests` (Baize): the user's first message is a seed request, verbatim.
- :class:`TopicRequests` (UltraChat): a model expands a meta-topic into a concrete request.
- :class:`EvolvedRequests` (Evol-Instruct): a model evolves a seed request with one operator;
  an evolution that copies the prompt, changes nothing or is no harder is eliminated, and the
  episode opens with the seed instead.
- :class:`ImportedPrefixes`: an existing conversation is the episode's beginning; the user
  simulator and the assistant continue it (it may end on either side).
- :class:`SpinDialogues` (SPIN): an existing conversation is replayed; at each real reply the
  model writes its own, and the real reply is chosen over it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

from dramaturg.scenarios._sources import ImportedDialogue, read_dialogues, read_seeds
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "EVOL_OPERATORS",
    "EvolOperator",
    "EvolvedRequests",
    "ImportedPrefixes",
    "Opening",
    "SeedRequests",
    "SpinDialogues",
    "TopicRequests",
]

_Frozen = ConfigDict(extra="forbid", frozen=True)

# WizardLM's in-depth operators, then in-breadth evolution (Xu et al., 2023).
EvolOperator = Literal[
    "add_constraints", "deepen", "concretize", "increase_reasoning", "complicate_input", "breadth"
]
EVOL_OPERATORS: tuple[EvolOperator, ...] = (
    "add_constraints",
    "deepen",
    "concretize",
    "increase_reasoning",
    "complicate_input",
    "breadth",
)


def _digest(items: list[str]) -> str:
    return hashlib.sha256("\x1f".join(items).encode()).hexdigest()[:16]


class SeedRequests(BaseModel):
    """Baize: each episode opens with one seed request, verbatim, as the user's first message."""

    model_config = _Frozen
    kind: Literal["seeds"] = "seeds"
    requests: list[str] = Field(min_length=1)

    @classmethod
    def from_file(cls, path: str | Path, *, column: str | None = None) -> SeedRequests:
        """Seeds from a txt, JSONL, CSV or Parquet file (see :func:`read_seeds`)."""
        return cls(requests=read_seeds(path, column=column))

    def summary(self) -> dict[str, Any]:
        return {"kind": self.kind, "items": len(self.requests), "sha256": _digest(self.requests)}


class TopicRequests(BaseModel):
    """UltraChat: a model expands each episode's meta-topic into a concrete opening request."""

    model_config = _Frozen
    kind: Literal["topics"] = "topics"
    topics: list[str] = Field(min_length=1)

    def summary(self) -> dict[str, Any]:
        return {"kind": self.kind, "items": len(self.topics), "sha256": _digest(self.topics)}


class EvolvedRequests(BaseModel):
    """Evol-Instruct: each episode's seed request is evolved by one operator, drawn per episode.

    Attributes:
        requests: the seed requests.
        operators: the operators to draw from (all six by default).
    """

    model_config = _Frozen
    kind: Literal["evolved"] = "evolved"
    requests: list[str] = Field(min_length=1)
    operators: list[EvolOperator] = Field(default_factory=lambda: list(EVOL_OPERATORS), min_length=1)

    @classmethod
    def from_file(cls, path: str | Path, *, column: str | None = None) -> EvolvedRequests:
        return cls(requests=read_seeds(path, column=column))

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "items": len(self.requests),
            "sha256": _digest(self.requests),
            "operators": list(self.operators),
        }


class _Dialogues(BaseModel):
    model_config = _Frozen
    dialogues: list[ImportedDialogue] = Field(min_length=1)

    def summary(self) -> dict[str, Any]:
        ids = [d.id for d in self.dialogues]
        return {"kind": getattr(self, "kind", ""), "items": len(ids), "sha256": _digest(ids)}


class ImportedPrefixes(_Dialogues):
    """Continue real dialogues: an imported conversation is each episode's beginning.

    The imported turns are stored with ``origin = 'imported'``; the user simulator and the
    assistant continue from where the conversation stops (the assistant answers first when it
    stops on the user's turn). A conversation's own system message becomes the assistant's
    prompt.
    """

    kind: Literal["imported"] = "imported"

    @classmethod
    def from_file(cls, path: str | Path) -> ImportedPrefixes:
        """Conversations in OpenAI ``messages`` JSONL or ShareGPT form (see :func:`read_dialogues`)."""
        return cls(dialogues=read_dialogues(path))


class SpinDialogues(_Dialogues):
    """SPIN: each real assistant reply is chosen over the model's own reply at that point."""

    kind: Literal["spin"] = "spin"

    @classmethod
    def from_file(cls, path: str | Path) -> SpinDialogues:
        return cls(dialogues=read_dialogues(path))


Opening = Annotated[
    SeedRequests | TopicRequests | EvolvedRequests | ImportedPrefixes | SpinDialogues,
    Field(discriminator="kind"),
]
