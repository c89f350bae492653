"""The sim's answers to the recipes' preparatory prompts (read by their markers).

- a topic expansion: a concrete first-person request about the topic;
- an Evol-Instruct rewrite: the seed plus what the operator asks for (a constraint, a step of
  reasoning, a concrete input, ...); now and then a planted bad evolution (the prompt's own
  words copied, or the seed unchanged) so the elimination has something to catch;
- an evolution verdict: "yes" when the second request adds to the first.
"""

from __future__ import annotations

import json
import random
import re

from dramaturg import _markers as mk

__all__ = ["evolve", "expand_topic", "judge_evolution"]

_TOPIC_FRAMES = (
    "I'd like some help with {topic}: where should I start if I have about an hour a day?",
    "Could you explain the basics of {topic} to me? I keep getting confused by the terms.",
    "I'm planning something around {topic} this month. What should I watch out for?",
    "What are three common mistakes people make with {topic}, and how do I avoid them?",
    "Can you give me a short step-by-step plan for getting better at {topic}?",
)
_ADDITIONS = {
    "add_constraints": ("Keep the answer under 150 words and include one concrete example.",),
    "deepen": ("Also explain why each step matters and what goes wrong if it is skipped.",),
    "concretize": ("Assume I am a beginner with a small budget and only weekends free.",),
    "increase_reasoning": ("Work it out step by step, and check the result at the end.",),
    "complicate_input": ("Use this data in the answer: 3 options costing 12, 30 and 45 euros.",),
}
_BREADTH = (
    "Here is a related but rarer question: {seed_lower} "
    "What would change for someone doing it for the first time?"
)


def expand_topic(system: str, rng: random.Random) -> str:
    topic = _field(system, mk.TOPIC_LABEL) or "this topic"
    return rng.choice(_TOPIC_FRAMES).format(topic=topic.rstrip(".").lower())


def evolve(system: str, request: str, rng: random.Random) -> str:
    operator = _field(system, "Operator:")
    seed = request.split(mk.EVOLVER_GIVEN, 1)[-1].split(mk.EVOLVER_REWRITTEN, 1)[0].strip()
    slip = rng.random()
    if slip < 0.1:
        return f"{mk.EVOLVER_REWRITTEN} {seed}"  # copies the prompt's own words
    if slip < 0.2:
        return seed  # changes nothing
    if operator == "breadth":
        return _BREADTH.format(seed_lower=seed[:1].lower() + seed[1:])
    return f"{seed} {rng.choice(_ADDITIONS.get(operator, _ADDITIONS['add_constraints']))}"


def judge_evolution(request: str) -> str:
    first = _between(request, mk.FIRST_REQUEST, mk.FIRST_REQUEST_CLOSE)
    second = _between(request, mk.SECOND_REQUEST, mk.SECOND_REQUEST_CLOSE)
    adds = len(second.split()) > len(first.split()) + 3 and second.strip() != first.strip()
    reason = "the second request asks for more" if adds else "the second request adds nothing"
    return json.dumps({"reason": reason, "verdict": "yes" if adds else "no"})


def _field(system: str, label: str) -> str:
    for line in system.splitlines():
        if line.startswith(label):
            return line[len(label) :].strip()
    return ""


def _between(text: str, start: str, end: str) -> str:
    found = re.search(re.escape(start) + r"\s*(.*?)\s*" + re.escape(end), text, re.S)
    return found.group(1) if found else ""
