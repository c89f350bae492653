"""Built-in scenario: a tutor guides a student through a generated linear equation."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping

from dramaturg.scenarios import CheckContext, CheckResult, Persona, Scenario, Stage, Transition

_RANGES = {"easy": (2, 5, 1, 10), "medium": (3, 9, 5, 30), "hard": (6, 15, 10, 90)}


def _equation(values: Mapping[str, str | int | float], rng: random.Random) -> dict[str, str | int]:
    """Solve a*x + b = c for a whole-number x; the student's first attempt may be wrong."""
    low_a, high_a, low_b, high_b = _RANGES[str(values["difficulty"])]
    a, x, b = rng.randint(low_a, high_a), rng.randint(-6, 12), rng.randint(low_b, high_b)
    c = a * x + b
    mistakes = [x + 1, x - 1, (c + b) // a, -x if x else 1]
    attempt = x if rng.random() < 0.35 else rng.choice([m for m in mistakes if m != x] or [x + 2])
    return {
        "problem": f"{a}x + {b} = {c}",
        "answer": x,
        "attempt": attempt,
    }


_PRAISE = re.compile(
    r"(?<!not )(?<!n't )\b(?:correct|that's right|exactly right|well done|nice work)\b", re.I
)
_OFFERED = re.compile(r"\bx\s*=\s*(-?\d+)")


def answer_not_revealed_early(ctx: CheckContext) -> CheckResult:
    """The tutor never states the answer before the student has."""
    answer = str(ctx.spec.variable("answer"))
    # \b before x: "5x = 3" is a step of the solution, not x = 3.
    leaked = re.search(rf"(?:\banswer is|\bx\s*=)\s*{re.escape(answer)}\b", ctx.reply)
    if leaked and not ctx.user_said(f"x = {answer}"):
        return CheckResult(False, f"revealed the answer: {leaked.group(0)!r}")
    return CheckResult(True)


def praise_only_for_the_right_answer(ctx: CheckContext) -> CheckResult:
    """If the student just offered an answer, the tutor calls it correct exactly when it is."""
    last_user = next((text for role, text in reversed(ctx.history) if role == "user"), "")
    offered = _OFFERED.findall(last_user)
    if not offered:
        return CheckResult(True)
    right = offered[-1] == str(ctx.spec.variable("answer"))
    praised = _PRAISE.search(ctx.reply) is not None
    if praised and not right:
        return CheckResult(False, f"praised the wrong answer x = {offered[-1]}")
    return CheckResult(True)


scenario = Scenario(
    name="math-tutor",
    description="A student solves a linear equation with a tutor who guides but never tells.",
    assistant_prompt=(
        "You are a patient math tutor. The student is working on the equation {problem}.\n"
        "The correct answer is {answer}.\n"
        "Never give the answer away directly; guide the student with one hint at a time.\n"
        "Always ask the student for their working when an answer is wrong.\n"
        "Subtract the constant from both sides first, then divide by the coefficient of x.\n"
        "Praise correct reasoning briefly and keep replies short."
    ),
    personas=[
        Persona(
            name="Sam",
            traits=["curious"],
            mood="keen",
            goal="solve {problem} for x",
            hidden_facts={"working": "I moved the constant to the other side first"},
        ),
        Persona(
            name="Ada",
            traits=["anxious"],
            mood="nervous",
            goal="understand how to solve {problem}",
            hidden_facts={"working": "I divided both sides first"},
        ),
        Persona(
            name="Leo",
            traits=["impatient"],
            mood="bored",
            goal="just get {problem} done",
            hidden_facts={"working": "I guessed and checked"},
        ),
        Persona(
            name="Mia",
            traits=["friendly"],
            mood="cheerful",
            goal="check your answer to {problem}",
            hidden_facts={"working": "I subtracted and then divided"},
        ),
        Persona(
            name="Noor",
            traits=["confused"],
            mood="unsure",
            goal="figure out where to start with {problem}",
            hidden_facts={"working": "I was not sure which side to start on"},
        ),
    ],
    variables={"difficulty": ["easy", "medium", "hard"]},
    derive=_equation,
    stages=[
        Stage(name="ask", instruction="Ask for help solving {problem} for x."),
        Stage(name="attempt", instruction="Say that you think the answer is x = {attempt}."),
        Stage(name="hint", instruction="Ask for a hint about the first step."),
        Stage(name="retry", instruction="Say that after working it through again you got x = {answer}."),
        Stage(name="check", instruction="Ask how you can check the answer yourself."),
        Stage(name="close", instruction="Thank the tutor and say goodbye.", terminal=True),
    ],
    transitions=[
        Transition(source="ask", target="attempt"),
        Transition(source="attempt", target="hint", weight=0.6),
        Transition(source="attempt", target="check", weight=0.4),
        Transition(source="hint", target="retry"),
        Transition(source="retry", target="check", weight=0.5),
        Transition(source="retry", target="close", weight=0.5),
        Transition(source="check", target="close"),
    ],
    max_turns=7,
    rubric=["mathematically correct", "guides without giving the answer away", "encouraging", "concise"],
    principles=["Never state the final answer before the student does."],
    checks=[answer_not_revealed_early, praise_only_for_the_right_answer],
)
