"""The role prompts. Their markers are shared with the sim backend (dramaturg._markers)."""

from __future__ import annotations

from dramaturg.scenarios import EpisodeSpec, PlannedStage

from dramaturg import _markers as mk

__all__ = ["director_note", "user_simulator_prompt"]


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
