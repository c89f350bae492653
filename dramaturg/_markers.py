"""Fixed strings shared by the role prompts (agents/) and the offline ``sim`` backend.

Real models read the prompts as prose; the sim backend reads the same prompts by these
markers, so it sees exactly what a real model would and nothing more.
"""

from __future__ import annotations

__all__ = [
    "CONVERSATION_LABEL",
    "CRITIC_HEADER",
    "DIRECTOR_PREFIX",
    "END_MARKER",
    "FACTS_HEADER",
    "FEEDBACK_LABEL",
    "GOAL_LABEL",
    "GOAL_LINE",
    "INSTRUCTIONS_CLOSE",
    "INSTRUCTIONS_OPEN",
    "JUDGE_HEADER",
    "MOOD_LABEL",
    "PERSONA_LABEL",
    "REPLY_CLOSE",
    "REPLY_OPEN",
    "RESPONSE_A_CLOSE",
    "RESPONSE_A_OPEN",
    "RESPONSE_B_CLOSE",
    "RESPONSE_B_OPEN",
    "REVISION_REQUEST",
    "RUBRIC_LABEL",
    "STAGE_LABEL",
    "TERMINAL_NOTE",
    "TRAITS_LABEL",
    "USER_SIMULATOR_HEADER",
    "VERIFIER_HEADER",
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

CRITIC_HEADER = "You are a CRITIC of an AI assistant's replies."
JUDGE_HEADER = "You are a JUDGE comparing two candidate replies of an AI assistant."
VERIFIER_HEADER = "You are a VERIFIER deciding whether a conversation reached the user's goal."
INSTRUCTIONS_OPEN = "<<<ASSISTANT INSTRUCTIONS"
INSTRUCTIONS_CLOSE = "ASSISTANT INSTRUCTIONS>>>"
CONVERSATION_LABEL = "Conversation so far:"
REPLY_OPEN = "<<<REPLY"
REPLY_CLOSE = "REPLY>>>"
RESPONSE_A_OPEN = "<<<RESPONSE A"
RESPONSE_A_CLOSE = "RESPONSE A>>>"
RESPONSE_B_OPEN = "<<<RESPONSE B"
RESPONSE_B_CLOSE = "RESPONSE B>>>"
RUBRIC_LABEL = "Rubric:"
REVISION_REQUEST = "[Revision request]"
FEEDBACK_LABEL = "Feedback:"
GOAL_LINE = "The user's goal:"
