"""Fixed strings shared by the role prompts (agents/) and the offline ``sim`` backend.

Real models read the prompts as prose; the sim backend reads the same prompts by these
markers, so it sees exactly what a real model would and nothing more.
"""

from __future__ import annotations

import re

__all__ = [
    "ASSISTANT_SAID",
    "CONVERSATION_LABEL",
    "CONVERSATION_START",
    "CRITIC_HEADER",
    "DESCRIPTION_LABEL",
    "DIRECTOR_PREFIX",
    "END_MARKER",
    "EVOLVER_GIVEN",
    "EVOLVER_HEADER",
    "EVOLVER_REWRITTEN",
    "EVOL_JUDGE_HEADER",
    "FACTS_HEADER",
    "FACT_ASKED_LABEL",
    "FEEDBACK_LABEL",
    "FIRST_REQUEST",
    "FIRST_REQUEST_CLOSE",
    "GOAL_LABEL",
    "GOAL_LINE",
    "INSTRUCTIONS_CLOSE",
    "INSTRUCTIONS_OPEN",
    "JUDGE_HEADER",
    "MESSAGE_ONLY",
    "MOOD_LABEL",
    "OUT_OF_SCOPE_MARKER",
    "PERSONA_LABEL",
    "REPLY_CLOSE",
    "REPLY_OPEN",
    "RESPONSE_A_CLOSE",
    "RESPONSE_A_OPEN",
    "RESPONSE_B_CLOSE",
    "RESPONSE_B_OPEN",
    "REVISION_REQUEST",
    "RUBRIC_LABEL",
    "SECOND_REQUEST",
    "SECOND_REQUEST_CLOSE",
    "TERMINAL_NOTE",
    "TOOL_FACTS_HEADER",
    "TOOL_SIMULATOR_HEADER",
    "TOPIC_HEADER",
    "TOPIC_LABEL",
    "TRAITS_LABEL",
    "TRANSFER_MARKER",
    "USER_SIMULATOR_HEADER",
    "VERIFIER_HEADER",
    "WHAT_NOW_LABEL",
    "split_end_marker",
]

# The user simulator writes one person's messages as a writing task, in the third person:
# small models asked to *be* the user slide into the assistant's voice from the first line
# (Qwen2.5-Coder 1.5B, measured), but write a named person's message well.
USER_SIMULATOR_HEADER = "You write the chat messages of one person, who is talking to an AI assistant."
# How the other side's lines reach the user simulator: a model that sees them unlabelled, as
# its own "user" turns, slides into the assistant's voice (measured on Qwen2.5-Coder 1.5B).
ASSISTANT_SAID = "[Assistant]:"
CONVERSATION_START = "(The chat starts: write the first message.)"
FACT_ASKED_LABEL = "The assistant asked for this:"
PERSONA_LABEL = "Persona:"
DESCRIPTION_LABEL = "About:"  # the persona's description, on one line
TRAITS_LABEL = "Traits:"
MOOD_LABEL = "Mood:"
GOAL_LABEL = "Goal:"
FACTS_HEADER = "Facts only this person knows (each is given only when the assistant asks for it):"
# How the user simulator ends a chat (tau2-bench's STOP / TRANSFER / OUT-OF-SCOPE): goal met or
# giving up, handed over to a human, or asked for something the person was never given.
END_MARKER = "<<END>>"
TRANSFER_MARKER = "<<TRANSFER>>"
OUT_OF_SCOPE_MARKER = "<<OUT_OF_SCOPE>>"
# Small models write a marker with a bracket too few or too many (the live 0.5B wrote "<END>"
# and "<<END>"): any of those is the marker, never words of the dialogue.
_ENDING_MARKERS = re.compile(r"<{1,3}\s*(END|TRANSFER|OUT[ _-]?OF[ _-]?SCOPE)\s*>{1,3}", re.I)
# The termination reason each marker gives the episode.
_ENDINGS = {"END": "user_ended", "TRANSFER": "user_transferred", "OUTOFSCOPE": "user_out_of_scope"}


def split_end_marker(text: str) -> tuple[str, str | None]:
    """``text`` without its end markers, and how the user ended the chat (None: not ended).

    The ending is a termination reason: ``user_ended``, ``user_transferred`` or
    ``user_out_of_scope``; with several markers, the first one written counts.

    Example:
        >>> split_end_marker("Okay, I'll wait for them. <<TRANSFER>>")
        ("Okay, I'll wait for them.", 'user_transferred')
    """
    found = _ENDING_MARKERS.search(text)
    if found is None:
        return text.strip(), None
    kind = re.sub(r"[ _-]", "", found.group(1).upper())
    return _ENDING_MARKERS.sub("", text).strip(), _ENDINGS[kind]


# The cue after the history: "Write Dana's next message. Dana should now: <instruction>".
DIRECTOR_PREFIX = "Write"
WHAT_NOW_LABEL = "should now:"
TERMINAL_NOTE = "This is the last message of the chat."
MESSAGE_ONLY = "Output only the message."

CRITIC_HEADER = "You are a CRITIC of an AI assistant's replies."
JUDGE_HEADER = "You are a JUDGE comparing two candidate replies of an AI assistant."
VERIFIER_HEADER = "You are a VERIFIER deciding whether a conversation reached the user's goal."
TOOL_SIMULATOR_HEADER = "You are the SERVICE behind one tool of a software system."
TOOL_FACTS_HEADER = "Facts of the world this service must agree with:"
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

# The recipes' preparatory calls (UltraChat's topic expansion, Evol-Instruct's evolution and
# its elimination), read by the sim by these headers.
TOPIC_HEADER = "You write the opening request of a chat between a person and an AI assistant."
TOPIC_LABEL = "Topic:"
EVOLVER_HEADER = "You are a PROMPT REWRITER making a request to an AI assistant more demanding."
EVOLVER_GIVEN = "#Given Prompt#:"
EVOLVER_REWRITTEN = "#Rewritten Prompt#:"
EVOL_JUDGE_HEADER = "You are a JUDGE of two requests to an AI assistant."
FIRST_REQUEST = "<<<FIRST REQUEST"
FIRST_REQUEST_CLOSE = "FIRST REQUEST>>>"
SECOND_REQUEST = "<<<SECOND REQUEST"
SECOND_REQUEST_CLOSE = "SECOND REQUEST>>>"
