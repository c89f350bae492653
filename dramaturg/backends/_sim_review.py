"""The sim backend's critic, reviser, judge and goal verifier.

They read the same prompts a real model would (see ``agents/_prompts.py``) and find the
sim assistant's planted mistakes from the reply text alone: padding (filler sentences), an
omitted required fact (the instruction sentence most relevant to the user's message), and a
broken constraint (doing what a "Never ..." instruction forbids, or leaking an answer key).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from dramaturg import _markers as mk
from dramaturg.backends._sim import _content_words, expected_guidance, is_goodbye

__all__ = [
    "FILLERS",
    "Issue",
    "choose_mistake",
    "critique",
    "find_issues",
    "judge",
    "revise",
    "verify_goal",
    "violating_sentence",
]

FILLERS = [
    "I want to assure you that your satisfaction is extremely important to us at all times.",
    "Please rest assured that we always strive to provide the very best experience possible.",
    "It is important to note that every situation is unique in its own special way.",
    "As I may have mentioned, I am always here for you whenever you might need anything at all.",
    "At the end of the day, what matters most is that everything works out well in the end.",
    "I truly appreciate your patience and understanding throughout this whole process.",
]
# Filler is recognised by its phrasing, not by membership in the list above.
_FILLER = re.compile(
    r"\b(?:rest assured|i want to assure you|it is important to note|at the end of the day|"
    r"as i may have mentioned|i truly appreciate your patience|strive to provide the very best)\b",
    re.I,
)
_NEGATION = re.compile(r"\b(?:not|never|can't|cannot|won't|don't)\b", re.I)
_ANSWER_KEY = re.compile(r"(?:correct answer|answer key)\s*(?:is|:)\s*(-?\d+(?:\.\d+)?)", re.I)
_FEEDBACK_LINE = re.compile(r'^-\s*(padding|violation|omission):\s*(remove|include)\s+"(.+)"\s*$', re.M)


@dataclass(frozen=True, slots=True)
class Issue:
    kind: str  # padding | omission | violation
    action: str  # remove | include
    sentence: str

    def feedback(self) -> str:
        return f'- {self.kind}: {self.action} "{self.sentence}"'


def _between(text: str, start: str, end: str) -> str:
    _head, found, rest = text.partition(start)
    return rest.partition(end)[0].strip() if found else ""


def _forbidden_actions(instructions: str) -> list[str]:
    """The X of every "Never X" instruction (up to the first ; or .)."""
    actions = []
    for match in re.finditer(r"(?:^|[.\n]\s*)Never ([^.;\n]+)", instructions):
        actions.append(match.group(1).strip())
    return actions


def _answer_key(instructions: str) -> str | None:
    match = _ANSWER_KEY.search(instructions)
    return match.group(1) if match else None


def choose_mistake(system: str, guidance: str, rng: random.Random) -> str:
    """Pick one mistake the reply can carry given what its instructions say."""
    options = ["padding"]
    if guidance:
        options.append("omission")
    if _forbidden_actions(system) or _answer_key(system):
        options.append("violation")
    return rng.choice(options)


def violating_sentence(system: str, rng: random.Random) -> str:
    key = _answer_key(system)
    forbidden = _forbidden_actions(system)
    if key is not None and (not forbidden or rng.random() < 0.5):
        return f"To save time: the answer is {key}."
    action = rng.choice(forbidden)
    action = re.sub(r"\b(?:their|his|her)\b", "your", action)
    return f"Sure, I can {action}."


def _parse_transcript(text: str) -> list[tuple[str, str]]:
    turns = []
    for line in text.splitlines():
        role, _, content = line.partition(": ")
        if role in ("USER", "ASSISTANT"):
            turns.append((role.lower(), content))
    return turns


def find_issues(instructions: str, history: Sequence[tuple[str, str]], reply: str) -> list[Issue]:
    """The problems a careful reader finds in ``reply`` given its instructions and context."""
    issues: list[Issue] = []
    sentences = re.split(r"(?<=[.!?])\s+", reply.strip())
    for sentence in sentences:
        if _FILLER.search(sentence):
            issues.append(Issue("padding", "remove", sentence))
    key = _answer_key(instructions)
    user_text = " ".join(content for role, content in history if role == "user")
    for sentence in sentences:
        leaks_key = key is not None and re.search(rf"(?:answer is|x\s*=)\s*{re.escape(key)}\b", sentence)
        if leaks_key and f"x = {key}" not in user_text:
            issues.append(Issue("violation", "remove", sentence))
            continue
        for action in _forbidden_actions(instructions):
            wanted = _content_words(action)
            does_it = wanted and len(wanted & _content_words(sentence)) >= 0.75 * len(wanted)
            if does_it and not _NEGATION.search(sentence):
                issues.append(Issue("violation", "remove", sentence))
                break
    last_user = next((content for role, content in reversed(history) if role == "user"), "")
    said_before = " ".join(content for role, content in history if role == "assistant")
    guidance = expected_guidance(instructions, last_user, said_before)
    if guidance and guidance.lower().rstrip(".") not in reply.lower():
        issues.append(Issue("omission", "include", guidance))
    return issues


def _rubric(system: str) -> list[str]:
    lines = system.splitlines()
    if mk.RUBRIC_LABEL not in lines:
        return []
    out = []
    for line in lines[lines.index(mk.RUBRIC_LABEL) + 1 :]:
        if not line.startswith("- "):
            break
        out.append(line[2:])
    return out


def critique(system: str, request: str, rng: random.Random) -> str:
    instructions = _between(system, mk.INSTRUCTIONS_OPEN, mk.INSTRUCTIONS_CLOSE)
    principles = "\n".join(line[2:] for line in system.splitlines() if line.startswith("- Never"))
    history = _parse_transcript(request.partition("Reply under review:")[0])
    reply = _between(request, mk.REPLY_OPEN, mk.REPLY_CLOSE)
    issues = find_issues(instructions + "\n" + principles, history, reply)
    overall = rng.choice([8, 9]) if not issues else max(1, 6 - 2 * len(issues) + rng.choice([-1, 0]))
    scores = {c: min(10, max(1, overall + rng.choice([-1, 0, 0, 1]))) for c in _rubric(system)}
    feedback = "\n".join(issue.feedback() for issue in issues) or "- none: the reply is fine as it is"
    return json.dumps({"scores": scores, "overall": overall, "feedback": feedback})


def revise(messages: Sequence[tuple[str, str]]) -> str:
    """Apply structured feedback to the previous reply: remove and include sentences."""
    request = messages[-1][1]
    original = next((content for role, content in reversed(messages[:-1]) if role == "assistant"), "")
    revised = original
    includes = []
    for _, action, sentence in _FEEDBACK_LINE.findall(request):
        if action == "remove":
            revised = revised.replace(sentence, "")
        else:
            includes.append(sentence if sentence.endswith((".", "!", "?")) else sentence + ".")
    if includes:
        first, sep, rest = revised.partition(". ")
        revised = f"{first}{sep}{' '.join(includes)} {rest}" if sep else f"{revised} {' '.join(includes)}"
    return re.sub(r"\s{2,}", " ", revised).strip() or original


def judge(system: str, request: str) -> str:
    instructions = _between(system, mk.INSTRUCTIONS_OPEN, mk.INSTRUCTIONS_CLOSE)
    principles = "\n".join(line[2:] for line in system.splitlines() if line.startswith("- Never"))
    history = _parse_transcript(request.partition(mk.RESPONSE_A_OPEN)[0])
    first = _between(request, mk.RESPONSE_A_OPEN, mk.RESPONSE_A_CLOSE)
    second = _between(request, mk.RESPONSE_B_OPEN, mk.RESPONSE_B_CLOSE)
    rules = instructions + "\n" + principles
    issues_a, issues_b = (len(find_issues(rules, history, text)) for text in (first, second))
    if issues_a == issues_b:
        return json.dumps({"winner": "tie", "reason": "both replies have the same problems"})
    winner = "A" if issues_a < issues_b else "B"
    return json.dumps({"winner": winner, "reason": f"response {winner} has fewer problems"})


def verify_goal(request: str) -> str:
    history = _parse_transcript(request)
    last_user = next((content for role, content in reversed(history) if role == "user"), "")
    met = is_goodbye(last_user) and any(role == "assistant" for role, _ in history)
    reason = "the user left satisfied" if met else "the conversation ended without resolution"
    return json.dumps({"goal_met": met, "reason": reason})
