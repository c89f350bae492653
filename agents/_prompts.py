"""The role prompts. Their markers are shared with the sim backend (dramaturg._markers)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from dramaturg.scenarios import EpisodeSpec, PlannedStage

from dramaturg import _markers as mk

__all__ = [
    "Standards",
    "asked_facts",
    "critic_prompt",
    "critique_request",
    "director_note",
    "goal_request",
    "judge_prompt",
    "judge_request",
    "retry_note",
    "revision_request",
    "transcript",
    "user_simulator_prompt",
    "user_turn_request",
    "verifier_prompt",
]


_WORD = re.compile(r"[a-z0-9]+")
_KEY_FILLER = frozenset({"the", "a", "an", "of", "your", "my"})
# A message asks for something when it questions or requests; a mention alone does not.
_REQUEST = re.compile(
    r"\?|\b(?:please|provide|share|send|tell me|give me|let me know|confirm|what is|what's|may i have)\b",
    re.I,
)


def user_simulator_prompt(spec: EpisodeSpec) -> str:
    """The user simulator's system prompt: who the person is, what they know, how to write them.

    The rules are tau2-bench's user-simulator guidelines: one message at a time, no invented
    facts, facts revealed only when asked, own words, an explicit marker for done, transfer and
    out of scope.
    """
    name = spec.persona
    lines = [mk.USER_SIMULATOR_HEADER, f"{mk.PERSONA_LABEL} {name}"]
    if spec.description:
        # On one line: the prompt is read by labelled lines (the sim backend does exactly that).
        lines.append(f"{mk.DESCRIPTION_LABEL} {' '.join(spec.description.split())}")
    lines += [
        f"{mk.TRAITS_LABEL} {', '.join(spec.traits) or 'none in particular'}",
        f"{mk.MOOD_LABEL} {spec.mood}",
        f"{mk.GOAL_LABEL} {spec.goal}",
    ]
    if spec.hidden_facts:
        lines.append(mk.FACTS_HEADER)
        lines.extend(f"- {key}: {value}" for key, value in spec.hidden_facts)
    lines += [
        "",
        f"How {name} writes:",
        f"- One short message at a time, in the first person, the way {name} would type it.",
        f"- {name} is the user, never the assistant: {name} does not offer help, does not ask for",
        f"  {name}'s own details and does not speak for the company or service.",
        f"- Only the facts above. Asked for something not listed, {name} says they do not have it.",
        "  Never make up ids, dates, amounts or names.",
        f"- {name} gives a fact only when the assistant asks for it, and only that fact.",
        f"- {name}'s own words: never copy these notes, never repeat the assistant's words.",
        "- No notes, labels, names before the message or descriptions of what is happening.",
        f"- End the chat by writing a marker at the end of {name}'s last message:",
        f"  {mk.END_MARKER} when {name}'s goal is met or {name} wants to stop;",
        f"  {mk.TRANSFER_MARKER} when the assistant has handed {name} over to a human or another team;",
        f"  {mk.OUT_OF_SCOPE_MARKER} when the chat needs something {name} was never given and cannot go on.",
        f"The assistant's messages reach you marked {mk.ASSISTANT_SAID} {mk.MESSAGE_ONLY}",
    ]
    return "\n".join(lines)


def director_note(spec: EpisodeSpec, stage: PlannedStage) -> str:
    """The per-turn cue: whose message to write and what the person does now."""
    name = spec.persona
    note = f"{mk.DIRECTOR_PREFIX} {name}'s next message. {name} {mk.WHAT_NOW_LABEL} {stage.instruction}"
    if stage.terminal:
        note += f" {mk.TERMINAL_NOTE}"
    return note


def asked_facts(spec: EpisodeSpec, assistant_text: str) -> list[tuple[str, str]]:
    """The hidden facts the assistant's message asks for (most of a key's words appear in it)."""
    said = set(_WORD.findall(assistant_text.lower()))
    asked = []
    for key, value in spec.hidden_facts:
        words = [w for w in _WORD.findall(key.lower()) if w not in _KEY_FILLER]
        if words and sum(w in said for w in words) * 2 >= len(words) and _REQUEST.search(assistant_text):
            asked.append((key, value))
    return asked


_RETRY_REASONS = {
    "empty": "it was empty",
    "truncated": "it was too long and got cut off",
    "role_flip": "it was written as the assistant, not as {name}",
    "echo": "it repeated an earlier message",
    "meta": "it described the chat or had labels instead of being just the message",
    "copied_instruction": "it copied the instructions instead of using {name}'s own words",
    "invented_fact": "it stated facts {name} was never given",
}


def retry_note(spec: EpisodeSpec, reasons: Sequence[str]) -> str:
    """Why the previous try at this message was rejected, for the regeneration request."""
    why = "; ".join(dict.fromkeys(_RETRY_REASONS.get(r, r).format(name=spec.persona) for r in reasons))
    return f"(The last try at this message could not be used: {why}. Write a new one.)"


def user_turn_request(
    spec: EpisodeSpec, stage: PlannedStage, assistant_text: str | None, retry_reasons: Sequence[str] = ()
) -> str:
    """What the user simulator hears each turn: the assistant's line, labelled, then the cue.

    The cue (whose message, what to do now, which asked-for facts the person holds) comes
    after the history, where models weight instructions most (UltraChat appends the user
    prompt the same way to keep roles from swapping).
    """
    # The first message answers nothing: the cue alone (a bracketed "[chat opens]" line made
    # a small model narrate "[The person says hello...]" instead of writing the message).
    cue = [] if assistant_text is None else [f"{mk.ASSISTANT_SAID} {assistant_text}", ""]
    cue.append(director_note(spec, stage))
    if assistant_text is not None:
        cue += [f"{mk.FACT_ASKED_LABEL} {key}: {value}." for key, value in asked_facts(spec, assistant_text)]
    if retry_reasons:
        cue.append(retry_note(spec, retry_reasons))
    cue.append(f"{mk.MESSAGE_ONLY.removesuffix('.')}, as {spec.persona}.")
    return "\n".join(cue)


def transcript(history: Sequence[tuple[str, str]]) -> str:
    """A conversation as ROLE: text lines, the form the critic, judge and verifier read."""
    return "\n".join(f"{role.upper()}: {content}" for role, content in history)


class Standards(Protocol):
    """What a reply is judged against; an episode spec is one, a calibration probe another."""

    @property
    def rubric(self) -> tuple[str, ...]: ...

    @property
    def principles(self) -> tuple[str, ...]: ...

    @property
    def assistant_prompt(self) -> str: ...


def _standards(spec: Standards) -> list[str]:
    """What a reply is measured against: rubric, principles, the assistant's instructions."""
    lines = [mk.RUBRIC_LABEL, *(f"- {criterion}" for criterion in spec.rubric)]
    if spec.principles:
        lines += ["Principles every reply must respect:", *(f"- {p}" for p in spec.principles)]
    return [*lines, mk.INSTRUCTIONS_OPEN, spec.assistant_prompt, mk.INSTRUCTIONS_CLOSE]


def critic_prompt(spec: Standards) -> str:
    """The critic's system prompt: rubric, principles and the assistant's own instructions."""
    lines = [
        mk.CRITIC_HEADER,
        "Score the reply under review against each rubric criterion from 1 (bad) to 10 (excellent),",
        "give an overall score from 1 to 10, and write actionable feedback: one line per concrete",
        "problem, saying exactly what to remove, add or change. Judge only the reply under review.",
        *_standards(spec),
        "Reply with JSON only, no prose around it:",
        '{"feedback": "<one problem per line>", "scores": {"<criterion>": <1-10>, ...}, "overall": <1-10>}',
        "Use the rubric criteria exactly as written as the keys of scores.",
    ]
    return "\n".join(lines)


def critique_request(history: Sequence[tuple[str, str]], reply: str) -> str:
    return "\n".join(
        [
            mk.CONVERSATION_LABEL,
            transcript(history),
            "Reply under review:",
            mk.REPLY_OPEN,
            reply,
            mk.REPLY_CLOSE,
        ]
    )


def revision_request(feedback: str) -> str:
    """What the assistant hears when its reply must be revised."""
    return "\n".join(
        [
            mk.REVISION_REQUEST,
            "A reviewer found problems with your last reply. Rewrite it so that every problem is",
            "fixed and everything that was right is kept. Reply with the new version only.",
            mk.FEEDBACK_LABEL,
            feedback,
        ]
    )


def judge_prompt(spec: Standards) -> str:
    lines = [
        mk.JUDGE_HEADER,
        "Decide which reply better answers the last user message, given the assistant's",
        "instructions and the rubric. Ignore the order in which the replies are shown and their length.",
        *_standards(spec),
        'Reply with JSON only: {"reason": "<one sentence>", "winner": "A" | "B" | "tie"}',
    ]
    return "\n".join(lines)


def judge_request(history: Sequence[tuple[str, str]], first: str, second: str) -> str:
    return "\n".join(
        [
            mk.CONVERSATION_LABEL,
            transcript(history),
            mk.RESPONSE_A_OPEN,
            first,
            mk.RESPONSE_A_CLOSE,
            mk.RESPONSE_B_OPEN,
            second,
            mk.RESPONSE_B_CLOSE,
        ]
    )


def verifier_prompt() -> str:
    return "\n".join(
        [
            mk.VERIFIER_HEADER,
            "Read the whole conversation and decide whether the user's goal was met by the end.",
            'Reply with JSON only: {"reason": "<one sentence>", "goal_met": true | false}',
        ]
    )


def tool_simulator_prompt(spec: EpisodeSpec, name: str, description: str, result_schema: str) -> str:
    """The tool simulator's brief: answer one tool's calls as its service would, in JSON."""
    facts = [f"- {key}: {value}" for key, value in spec.hidden_facts]
    facts += [f"- {key}: {value}" for key, value in spec.variables]
    return "\n".join(
        [
            mk.TOOL_SIMULATOR_HEADER,
            f"Tool: {name}. {description}",
            "Given the arguments of a call, reply with the result the real service would return:",
            "JSON only, matching this schema, with realistic values.",
            f"Result schema: {result_schema}",
            "If the arguments name something that does not exist in these facts, say so in the",
            "result the way the service would (an empty or not-found result), never invent it.",
            mk.TOOL_FACTS_HEADER,
            *facts,
        ]
    )


def tool_call_request(arguments: str) -> str:
    return f"Arguments: {arguments}"


def goal_request(goal: str, history: Sequence[tuple[str, str]]) -> str:
    return "\n".join([f"{mk.GOAL_LINE} {goal}", mk.CONVERSATION_LABEL, transcript(history)])
