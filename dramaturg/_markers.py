"""Fixed strings shared by the role prompts (agents/) and the offline ``sim`` backend.

Real models read the prompts as prose; the sim backend reads the same prompts by these
markers, so it sees exactly what a real model would and nothing more.
"""

from __future__ import annotations

__all__ = [
    "DIRECTOR_PREFIX",
    "END_MARKER",
    "FACTS_HEADER",
    "GOAL_LABEL",
    "MOOD_LABEL",
    "PERSONA_LABEL",
    "STAGE_LABEL",
    "TERMINAL_NOTE",
    "TRAITS_LABEL",
    "USER_SIMULATOR_HEADER",
    "WHAT_NOW_LABEL",
]

USER_SIMULATOR_HEADER = "You are role-playing a USER who is talking to an AI assistant."
PERSONA_LABEL = "Persona:"
TRAITS_LABEL = "Traits:"
MOOD_LABEL = "Mood:"
GOAL_LABEL = "Your goal:"
FACTS_HEADER = "Facts only you know (reveal one only when the assistant asks for it):"
END_MARKER = "<<END>>"

DIRECTOR_PREFIX = "[Director]"
STAGE_LABEL = "Stage:"
WHAT_NOW_LABEL = "What to do now:"
TERMINAL_NOTE = "This is the last stage of the conversation."
