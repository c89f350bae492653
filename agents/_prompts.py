"""The role prompts. Their markers are shared with the sim backend (dramaturg._markers)."""

from __future__ import annotations

from collections.abc import Sequence

from dramaturg.scenarios import EpisodeSpec, PlannedStage

from dramaturg import _markers as mk

__all__ = [
    "critic_prompt",
    "critique_request",
    "director_note",
    "goal_request",
    "judge_prompt",
    "judge_request",
    "revision_request",
    "transcript",
    "user_simulator_prompt",
    "verifier_prompt",
]


def user_simulator_prompt(spec: EpisodeSpec) -> str:
    """The user simulator's system prompt: persona, goal and hidden facts, never the script."""
    lines = [
        mk.USER_SIMULATOR_HEADER,
        "Stay in character as the user at all times: never answer as the assistant, never offer help.",
        f"{mk.PERSONA_LABEL} {spec.persona}",
        f"{mk.TRAITS_LABEL} {', '.join(spec.traits) or 'none in particular'}",
        f"{mk.MOOD_LABEL} {spec.mood}",
        f"{mk.GOAL_LABEL} {spec.goal}",
    ]
    if spec.hidden_facts:
        lines.append(mk.FACTS_HEADER)
        lines.extend(f"- {key}: {value}" for key, value in spec.hidden_facts)
    lines += [
        "",
        "Write one short message at a time, in the first person, as this person would type it.",
        f"A {mk.DIRECTOR_PREFIX} note after the assistant's message tells you what to do now; "
        "follow it without mentioning it.",
        f"If your goal is met or you want to stop, end your message with {mk.END_MARKER}.",
    ]
    return "\n".join(lines)


def director_note(stage: PlannedStage) -> str:
    """The per-turn stage direction appended to what the user simulator hears."""
    note = f"{mk.DIRECTOR_PREFIX} {mk.STAGE_LABEL} {stage.name}. {mk.WHAT_NOW_LABEL} {stage.instruction}"
    if stage.terminal:
        note += f" {mk.TERMINAL_NOTE}"
    return note


def transcript(history: Sequence[tuple[str, str]]) -> str:
    """A conversation as ROLE: text lines, the form the critic, judge and verifier read."""
    return "\n".join(f"{role.upper()}: {content}" for role, content in history)


def _standards(spec: EpisodeSpec) -> list[str]:
    """What a reply is measured against: rubric, principles, the assistant's instructions."""
    lines = [mk.RUBRIC_LABEL, *(f"- {criterion}" for criterion in spec.rubric)]
    if spec.principles:
        lines += ["Principles every reply must respect:", *(f"- {p}" for p in spec.principles)]
    return [*lines, mk.INSTRUCTIONS_OPEN, spec.assistant_prompt, mk.INSTRUCTIONS_CLOSE]


def critic_prompt(spec: EpisodeSpec) -> str:
    """The critic's system prompt: rubric, principles and the assistant's own instructions."""
    lines = [
        mk.CRITIC_HEADER,
        "Score the reply under review against each rubric criterion from 1 (bad) to 10 (excellent),",
        "give an overall score from 1 to 10, and write actionable feedback: one line per concrete",
        "problem, saying exactly what to remove, add or change. Judge only the reply under review.",
        *_standards(spec),
        "Reply with JSON only, no prose around it:",
        '{"scores": {"<criterion>": <1-10>, ...}, "overall": <1-10>, "feedback": "<one problem per line>"}',
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


def judge_prompt(spec: EpisodeSpec) -> str:
    lines = [
        mk.JUDGE_HEADER,
        "Decide which reply better answers the last user message, given the assistant's",
        "instructions and the rubric. Ignore the order in which the replies are shown and their length.",
        *_standards(spec),
        'Reply with JSON only: {"winner": "A" | "B" | "tie", "reason": "<one sentence>"}',
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
            'Reply with JSON only: {"goal_met": true | false, "reason": "<one sentence>"}',
        ]
    )


def goal_request(goal: str, history: Sequence[tuple[str, str]]) -> str:
    return "\n".join([f"{mk.GOAL_LINE} {goal}", mk.CONVERSATION_LABEL, transcript(history)])
