"""The seed methods of synthetic dialogue, each a few lines of dramaturg.

Scenario factories (each returns a :class:`~dramaturg.Scenario` to run like any other):

- :func:`baize`: seed questions from a file open the dialogues, one per episode.
- :func:`ultrachat`: meta-topics expand, by model, into concrete opening requests.
- :func:`evol_instruct`: seed requests evolved in depth or breadth, with the eliminations.
- :func:`continue_dialogues`: real conversations continued by the user simulator and assistant.
- :func:`spin`: each real reply chosen over the model's own at that point.
- :func:`persona_hub`: a scenario's personas drawn from a pool file, for coverage.

Run options (each returns the option group to put in :class:`~dramaturg.RunConfig`):

- :func:`self_refine`: critique and revise until the critic is satisfied (K rounds at most).
- :func:`ultrafeedback`: best-of-n across several models, judged in both orders.
- :func:`constitutional_ai`: principles sampled per critique from a constitution.
- :func:`self_rewarding`: one model in every role.

From the command line, ``dramaturg run RECIPE:FILE`` runs a scenario factory on a file with
its defaults: ``baize:questions.txt``, ``ultrachat:topics.txt``, ``evol:requests.txt``,
``continue:dialogues.jsonl``, ``spin:dialogues.jsonl``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from dramaturg._config import ModelOptions, ReviewOptions
from dramaturg.scenarios import (
    EVOL_OPERATORS,
    EvolOperator,
    EvolvedRequests,
    ImportedPrefixes,
    Opening,
    Persona,
    Scenario,
    SeedRequests,
    SpinDialogues,
    Stage,
    TopicRequests,
    read_personas,
    read_seeds,
)

__all__ = [
    "RECIPES",
    "baize",
    "constitutional_ai",
    "continue_dialogues",
    "evol_instruct",
    "persona_hub",
    "self_refine",
    "self_rewarding",
    "spin",
    "ultrachat",
    "ultrafeedback",
]

HELPFUL_ASSISTANT = (
    "You are a helpful, knowledgeable assistant. Answer accurately and to the point; give "
    "steps or examples when they help, and ask for details only when the request cannot be "
    "answered without them."
)
# The person who opened with a request: they pursue it, then close.
_ASKER = Persona(
    name="Sam",
    traits=["curious"],
    goal="get a clear, complete answer to the request you opened the chat with",
)
_PURSUE = [
    Stage(name="ask", instruction="Ask your question."),
    Stage(name="apply", instruction="Ask how to apply the answer to your own situation."),
    Stage(name="detail", instruction="Ask what to do if the first suggestion does not work."),
    Stage(name="close", instruction="Thank the assistant and say goodbye.", terminal=True),
]
# The person of an imported conversation, picking it up where it stopped.
_CONTINUER = Persona(
    name="Sam",
    traits=["curious"],
    goal="carry on the conversation so far: follow up on what the assistant said last",
)
_CONTINUE = [
    Stage(name="next", instruction="Ask what you should do next."),
    Stage(name="detail", instruction="Ask whether there is anything to watch out for."),
    Stage(name="close", instruction="Thank the assistant and say goodbye.", terminal=True),
]


def _pursued(
    name: str, description: str, opening: Opening, assistant_prompt: str, personas: Sequence[Persona]
) -> Scenario:
    """A scenario whose person opens with a request (the opening's) and pursues it."""
    return Scenario(
        name=name,
        description=description,
        assistant_prompt=assistant_prompt,
        personas=list(personas),
        stages=_PURSUE,
        opening=opening,
    )


def _texts(source: str | Path | Sequence[str], column: str | None) -> list[str]:
    if isinstance(source, str | Path):
        return read_seeds(source, column=column)
    return list(source)


def baize(
    seeds: str | Path | Sequence[str],
    *,
    name: str = "baize",
    column: str | None = None,
    assistant_prompt: str = HELPFUL_ASSISTANT,
    personas: Sequence[Persona] = (_ASKER,),
) -> Scenario:
    """Baize (Xu et al., 2023): each episode opens with one seed question, verbatim.

    Args:
        seeds: a txt, JSONL, CSV or Parquet file of questions (see ``read_seeds``), or a list.
        column: the file's column of questions, when it has several text columns.
    """
    opening = SeedRequests(requests=_texts(seeds, column))
    return _pursued(name, "Self-chat opened by seed questions (Baize).", opening, assistant_prompt, personas)


def ultrachat(
    topics: str | Path | Sequence[str],
    *,
    name: str = "ultrachat",
    assistant_prompt: str = HELPFUL_ASSISTANT,
    personas: Sequence[Persona] = (_ASKER,),
) -> Scenario:
    """UltraChat (Ding et al., 2023): a model (the user simulator's) turns each meta-topic
    into a concrete opening request, which the user simulator then pursues."""
    opening = TopicRequests(topics=_texts(topics, None))
    description = "Dialogues opened by requests a model wrote from meta-topics (UltraChat)."
    return _pursued(name, description, opening, assistant_prompt, personas)


def evol_instruct(
    seeds: str | Path | Sequence[str],
    *,
    operators: Sequence[EvolOperator] = EVOL_OPERATORS,
    name: str = "evol-instruct",
    column: str | None = None,
    assistant_prompt: str = HELPFUL_ASSISTANT,
    personas: Sequence[Persona] = (_ASKER,),
) -> Scenario:
    """Evol-Instruct (Xu et al., 2023): each seed request is evolved by one operator drawn per
    episode (in depth: add constraints, deepen, concretize, increase reasoning, complicate
    the input; or in breadth). An evolution that copies the rewriting prompt, changes
    nothing, or that the verifier finds no harder (in breadth: not new) is eliminated: the
    episode opens with the seed, and the ``openings`` table says why."""
    opening = EvolvedRequests(requests=_texts(seeds, column), operators=list(operators))
    description = "Dialogues opened by evolved requests (Evol-Instruct)."
    return _pursued(name, description, opening, assistant_prompt, personas)


def continue_dialogues(
    dialogues: str | Path,
    *,
    name: str = "continued",
    assistant_prompt: str = HELPFUL_ASSISTANT,
    personas: Sequence[Persona] = (_CONTINUER,),
    stages: Sequence[Stage] = _CONTINUE,
) -> Scenario:
    """Continue real conversations (OpenAI ``messages`` JSONL or ShareGPT): each episode
    begins with one, stored with ``origin = 'imported'``; the user simulator and the assistant
    carry it on (the assistant answers first when it stops on the user's turn). A
    conversation's own system message becomes the assistant's prompt."""
    return Scenario(
        name=name,
        description="Real conversations, continued.",
        assistant_prompt=assistant_prompt,
        personas=list(personas),
        stages=list(stages),
        opening=ImportedPrefixes.from_file(dialogues),
    )


def spin(dialogues: str | Path, *, name: str = "spin", assistant_prompt: str = HELPFUL_ASSISTANT) -> Scenario:
    """SPIN (Chen et al., 2024): replay real conversations; at every real assistant reply the
    model writes its own from the same history, and the pair is the real reply (chosen)
    against the model's (rejected). Both are critiqued and judged in both orders; the pair's
    ``judge_agreement`` says whether the judges confirmed the real reply."""
    return Scenario(
        name=name,
        description="Real replies chosen over the model's own (SPIN).",
        assistant_prompt=assistant_prompt,
        personas=[_CONTINUER],
        stages=[Stage(name="replay", instruction="Replay the conversation.", terminal=True)],
        opening=SpinDialogues.from_file(dialogues),
    )


def persona_hub(scenario: Scenario, personas: str | Path, *, goal: str | None = None) -> Scenario:
    """Persona Hub (Ge et al., 2024): the scenario's personas from a pool file (CSV, JSONL or
    Parquet; see ``read_personas``), drawn without replacement so a run covers the pool. Rows
    without a goal take ``goal``, else the scenario's first persona's."""
    pool = read_personas(personas, goal=goal if goal is not None else scenario.personas[0].goal)
    return Scenario.model_validate({**_fields(scenario), "personas": pool})


def self_refine(rounds: int = 3, *, revise_below: float = 7.0) -> ReviewOptions:
    """Self-Refine (Madaan et al., 2023): critique and revise up to ``rounds`` times, while the
    critic scores the latest version below ``revise_below`` or a check fails; the pair is the
    first version against the last."""
    return ReviewOptions(refine_rounds=rounds, revise_below=revise_below)


def ultrafeedback(models: Sequence[str], *, assistant: str | None = None) -> ModelOptions:
    """UltraFeedback (Cui et al., 2023): best-of-n across ``models`` (``backend:model``), one
    candidate each beside the assistant's own reply, ranked by the critic and the best and
    worst judged in both orders."""
    return ModelOptions(assistant_model=assistant, candidate_models=list(models))


def constitutional_ai(
    scenario: Scenario, constitution: Sequence[str], *, per_critique: int = 1
) -> tuple[Scenario, ReviewOptions]:
    """Constitutional AI (Bai et al., 2022): the scenario's principles are the constitution;
    each critique judges by ``per_critique`` of them, sampled per critique."""
    governed = Scenario.model_validate({**_fields(scenario), "principles": list(constitution)})
    return governed, ReviewOptions(principles_per_critique=per_critique)


def self_rewarding(model: str) -> ModelOptions:
    """Self-Rewarding (Yuan et al., 2024): one model plays every role, its own critic and judge."""
    return ModelOptions(model=model)


def _fields(scenario: Scenario) -> dict[str, object]:
    return {name: getattr(scenario, name) for name in Scenario.model_fields}


# `dramaturg run RECIPE:FILE`: the scenario factories that take one file.
RECIPES: dict[str, Callable[[str], Scenario]] = {
    "baize": baize,
    "ultrachat": ultrachat,
    "evol": evol_instruct,
    "continue": continue_dialogues,
    "spin": spin,
}
