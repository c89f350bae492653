"""The prompts of the recipes' preparatory calls: UltraChat's topic expansion, Evol-Instruct's
evolution operators (WizardLM's templates, shortened) and its elimination judgment."""

from __future__ import annotations

from dramaturg.scenarios import EvolOperator

from dramaturg import _markers as mk

__all__ = [
    "evolution_prompt",
    "evolution_request",
    "evolution_verdict_prompt",
    "evolution_verdict_request",
    "topic_prompt",
]


def topic_prompt(topic: str) -> str:
    """UltraChat: a meta-topic becomes one concrete request a real person would type."""
    return "\n".join(
        [
            mk.TOPIC_HEADER,
            f"{mk.TOPIC_LABEL} {topic}",
            "Write the person's first message: one concrete, specific request or question about",
            "this topic, with the details a real person would give. One to three sentences, in",
            "the first person. Output only the message.",
        ]
    )


# What each in-depth operator asks the rewriter to do (WizardLM, Xu et al. 2023, appendix).
_IN_DEPTH = {
    "add_constraints": "Add one more constraint or requirement to the prompt.",
    "deepen": "If the prompt asks about an issue, increase the depth and breadth of the inquiry.",
    "concretize": "Replace general concepts with more specific ones.",
    "increase_reasoning": (
        "If the prompt can be solved with a few simple steps of thinking, rewrite it to "
        "explicitly require multiple-step reasoning."
    ),
    "complicate_input": (
        "Add a small piece of concrete input the request must work with: a short table, a "
        "list of numbers, a code snippet or a passage of text."
    ),
}


def evolution_prompt(operator: EvolOperator) -> str:
    """The rewriter's system prompt for one operator; the seed follows as #Given Prompt#."""
    if operator == "breadth":
        task = [
            "Draw inspiration from the #Given Prompt# to create a brand new prompt. The new prompt",
            "must belong to the same domain as the #Given Prompt# but be rarer, with a similar",
            "length and complexity.",
        ]
    else:
        task = [
            "Rewrite the #Given Prompt# into a more complex version that is harder for an AI",
            "assistant to handle, yet still reasonable and answerable by a human.",
            f"Method: {_IN_DEPTH[operator]}",
            "Add only 10 to 20 words to the #Given Prompt#.",
        ]
    return "\n".join(
        [
            mk.EVOLVER_HEADER,
            f"Operator: {operator}",
            *task,
            "Never write '#Given Prompt#', '#Rewritten Prompt#', 'given prompt' or 'rewritten",
            "prompt' in your answer. Output only the new prompt.",
        ]
    )


def evolution_request(seed: str) -> str:
    return f"{mk.EVOLVER_GIVEN}\n{seed}\n{mk.EVOLVER_REWRITTEN}"


def evolution_verdict_prompt(operator: EvolOperator) -> str:
    """WizardLM's elimination step 1: an evolution that adds nothing is dropped."""
    question = (
        "Is the second request a genuinely different request from the first (not a reworded "
        "copy), at least as demanding?"
        if operator == "breadth"
        else "Is the second request harder to answer well than the first (more constraints, "
        "depth, specificity or reasoning), while still a reasonable request?"
    )
    return "\n".join(
        [
            mk.EVOL_JUDGE_HEADER,
            question,
            'Reply with JSON only: {"reason": "<one sentence>", "verdict": "yes" | "no"}',
        ]
    )


def evolution_verdict_request(first: str, second: str) -> str:
    return "\n".join(
        [mk.FIRST_REQUEST, first, mk.FIRST_REQUEST_CLOSE, mk.SECOND_REQUEST, second, mk.SECOND_REQUEST_CLOSE]
    )
