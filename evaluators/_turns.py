"""Turn validation: a generated turn is checked before it may enter the dialogue.

Real models fail as users and assistants in a few recurring ways: a user simulator that
slides into the assistant's voice (role flip), turns that copy the previous turn (echo
loops), prompt scaffolding leaking into the text (meta-commentary: "I'll revise the
response…", "As the user, …", speaker labels), invented facts, and empty or cut-off replies.
Each problem has a reason name that is stored and counted.

The role-flip detector reads what a turn *does*, with the persona in hand, rather than
matching a list of stock phrases: a user turn that offers help or service, requests the
customer's own details (the persona's hidden facts, or personal data in general), speaks
for the business (its policy, its actions, apologies on its behalf), or addresses the
persona by its own name is the assistant talking.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Literal, get_args

from dramaturg import _markers as mk

__all__ = [
    "REJECTION_REASONS",
    "RejectionReason",
    "TurnContext",
    "TurnProblem",
    "clean_turn",
    "role_flip_signals",
    "validate_turn",
]

RejectionReason = Literal[
    "empty",
    "truncated",
    "role_flip",
    "echo",
    "meta",
    "copied_instruction",
    "invented_fact",
    "raw_tool_result",
]
REJECTION_REASONS: tuple[RejectionReason, ...] = get_args(RejectionReason)
Speaker = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class TurnProblem:
    reason: RejectionReason
    detail: str


@dataclass(frozen=True, slots=True)
class TurnContext:
    """What a turn is validated against.

    Attributes:
        speaker: who wrote the turn.
        history: the dialogue before it, ``(role, text)``.
        persona: the user's name (a user turn greeting this name is talking to itself).
        facts: the user's hidden facts, ``(key, value)``.
        given: everything the user simulator was told (goal, variables): facts it may state.
        instruction: the stage instruction the user simulator is following.
        finish_reason: the API's finish reason; ``"length"`` means the reply was cut off.
        called_tools: the reply called tools before it answered, so its text is what the
            user reads of their results.
        feedback: what a revision was asked to fix (the reviewer's lines); a revision that
            repeats them is talking to the reviewer, not to the user.
    """

    speaker: Speaker
    history: tuple[tuple[str, str], ...] = ()
    persona: str = ""
    facts: tuple[tuple[str, str], ...] = ()
    given: str = ""
    instruction: str = ""
    finish_reason: str = "stop"
    called_tools: bool = False
    feedback: str = ""


def clean_turn(text: str, persona: str = "") -> str:
    """The turn without harmless wrapping: the persona's own name as a label, enclosing quotes.

    "Dana: Hi, my lamp arrived cracked." is Dana's message with a label in front; stripping
    the label keeps a good turn that rejecting it would waste.
    """
    cleaned = text.strip()
    # "Output: Hello! ..." (the live 0.5B): a generic label in front of the message.
    cleaned = re.sub(r"^\*{0,2}(?:output|message|reply|response)\*{0,2}\s*:\s*", "", cleaned, flags=re.I)
    if persona:
        cleaned = re.sub(rf"^\*{{0,2}}{re.escape(persona)}\*{{0,2}}\s*:\s*", "", cleaned)
    if (
        len(cleaned) > 1
        and cleaned[0] == cleaned[-1]
        and cleaned[0] in "\"'"
        and cleaned.count(cleaned[0]) == 2
    ):
        cleaned = cleaned[1:-1].strip()
    return cleaned


def validate_turn(text: str, context: TurnContext) -> list[TurnProblem]:
    """Every problem of ``text`` as the next turn; an empty list means it may enter the dialogue.

    Example:
        >>> problems = validate_turn("How can I help you today?", TurnContext("user"))
        >>> [p.reason for p in problems]
        ['role_flip']
    """
    stripped, _ = mk.split_end_marker(text)
    if not stripped:
        return [TurnProblem("empty", "no text")]
    problems: list[TurnProblem] = []
    if context.finish_reason == "length":
        problems.append(TurnProblem("truncated", "the reply hit max_tokens and was cut off"))
    if context.speaker == "user":
        signals = role_flip_signals(stripped, context)
        if signals:
            problems.append(TurnProblem("role_flip", "; ".join(signals)))
    meta = _meta_commentary(stripped, context)
    if meta:
        problems.append(TurnProblem("meta", meta))
    echo = _echo(stripped, context.history)
    if echo:
        problems.append(TurnProblem("echo", echo))
    if context.called_tools and _is_json_value(stripped):
        # The live 0.5B answered a customer with '{"escalated": true, "ticket": "ESC-001"}'.
        problems.append(TurnProblem("raw_tool_result", "the reply is JSON, not words to the user"))
    if context.speaker == "user":
        copied = _copied_instruction(stripped, context.instruction)
        if copied:
            problems.append(TurnProblem("copied_instruction", copied))
        invented = _invented_facts(stripped, context)
        if invented:
            problems.append(TurnProblem("invented_fact", invented))
    return problems


def _is_json_value(text: str) -> bool:
    """The whole text is JSON objects or arrays (fenced or not; one, or several in a row, as the
    live 0.5B wrote a call and a made-up result on two lines)."""
    body = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    decoder = json.JSONDecoder()
    position = 0
    while position < len(body):
        if body[position] not in "{[":
            return False
        try:
            _, position = decoder.raw_decode(body, position)
        except json.JSONDecodeError:
            return False
        while position < len(body) and body[position].isspace():
            position += 1
    return bool(body)


# -- role flips -----------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_FILLER_WORDS = frozenset({"the", "a", "an", "of", "your", "my", "and", "or", "to", "for"})
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")

# Offering help or service to the other party: what the assistant's job is.
_OFFER = re.compile(
    r"\b(?:how|what) (?:else )?(?:can|may|could) i (?:help|assist|do for you)"
    r"|\bi(?:'d| would|'ll| will)? be (?:happy|glad|pleased|delighted) to (?:help|assist|look|check|process)"
    r"|\bwould you like me to\b|\bshall i\b|\bdo you want me to\b"
    r"|\bis there anything (?:else )?(?:i|we) can\b|\banything else (?:i|we) can (?:do|help)"
    r"|\bi can (?:help|assist) you\b|\blet me (?:help|assist) you\b"
    # Acting on the other party's case: "I'll process your refund", "we can check the status of your order".
    r"|\b(?:i|we)(?:'ll| will| can| could)(?: be able to)? (?:process|issue|arrange|refund|replace|look into"
    r"|check|verify)\b(?:\W+\w+){0,4}?\W+(?:your|you)\b"
    r"|\b(?:i|we)(?:'ll| will| can)? send you (?:a|your) (?:replacement|refund|new|return label|prepaid)"
    r"|\bi(?:'ve| have) (?:processed|issued|initiated|arranged|refunded|escalated)\b"
    r"|\bfeel free to (?:ask|reach out|contact)\b|\bhow can we help\b",
    re.I,
)
# Speaking for the business.
_BUSINESS = re.compile(
    r"\bthank you for (?:contacting|reaching out|choosing|shopping|your patience|your understanding)"
    r"|\bthanks for (?:contacting|reaching out|your patience)"
    r"|\bthank(?:s| you) for (?:providing|sharing|confirming) (?:your|the|that|this)\b"
    r"|\b(?:i|we)(?:'m| am| are)? (?:so |very |truly )?sorry to hear\b"
    r"|\b(?:i|we) apologi[sz]e for (?:the|any) (?:inconvenience|trouble|confusion)"
    r"|\b(?:our|my) (?:refund |return )?(?:policy|team|records|system|store|customers)\b"
    r"|\bdear (?:customer|valued|sir|madam)\b"
    r"|\byour (?:refund|replacement|request|return) (?:has been|will be|is being)"
    r" (?:processed|issued|approved)",
    re.I,
)
_REQUEST_VERB = re.compile(
    r"\b(?:provide|share|send|give me|tell me|let me know|confirm|need|have|verify|what(?:'s| is| was))\b",
    re.I,
)
_ASKS_ABOUT_PURCHASE = re.compile(r"\byou(?:'ve)? (?:ordered|purchased|bought|received)\b", re.I)
_PERSONAL_DATA = re.compile(
    r"\byour (?:full )?(?:order (?:id|number)|account(?: number)?|email(?: address)?|phone(?: number)?|"
    r"(?:home |shipping )?address|receipt|date of birth|password|name)\b",
    re.I,
)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def role_flip_signals(text: str, context: TurnContext) -> list[str]:
    """Why a user turn reads as the assistant talking; empty when it reads as a user.

    Signals are read per sentence: offering help or service, requesting the customer's own
    details, speaking for the business, or greeting the persona by its own name.
    """
    signals: list[str] = []
    for match in _SENTENCE.finditer(text):
        sentence = match.group(0).strip()
        if not sentence:
            continue
        offer = _OFFER.search(sentence)
        if offer:
            signals.append(f"offers help: {offer.group(0)!r}")
        business = _BUSINESS.search(sentence)
        if business:
            signals.append(f"speaks for the business: {business.group(0)!r}")
        wanted = _requested_detail(sentence, context)
        if wanted:
            signals.append(f"asks for the customer's {wanted}")
        purchase = _ASKS_ABOUT_PURCHASE.search(sentence) if sentence.rstrip().endswith("?") else None
        if purchase:
            signals.append(f"asks about the customer's purchase: {purchase.group(0)!r}")
    if context.persona:
        name = re.escape(context.persona)
        greeting = re.search(
            rf"^\W*(?:(?:hi|hello|hey|dear|thanks|thank you)\W+)?{name}\b\s*[,!]", text, re.I
        )
        if greeting:
            signals.append(f"addresses the user by name: {greeting.group(0).strip()!r}")
    return list(dict.fromkeys(signals))


def _requested_detail(sentence: str, context: TurnContext) -> str:
    """The customer detail a sentence asks for ('' if none): requests, not statements."""
    lowered = sentence.lower()
    is_request = sentence.rstrip().endswith("?") or re.search(
        r"\b(?:please|could you|can you|would you|may i|i need|i'll need)\b", lowered
    )
    if not is_request or not _REQUEST_VERB.search(sentence):
        return ""
    personal = _PERSONAL_DATA.search(sentence)
    if personal:
        return personal.group(0).lower().removeprefix("your ")
    if context.facts and not re.search(r"\b(?:my|mine|i have|here is|here's|it's|it is)\b", lowered):
        # "Please provide the order ID": the user asking for a detail only the user holds.
        for key, _ in context.facts:
            words = set(_words(key)) - _FILLER_WORDS
            if words and words <= set(_words(sentence)):
                return key
    return ""


# -- meta-commentary ------------------------------------------------------------------------------

_META = re.compile(
    r"\b(?:i'?ll|i will|let me|i'?ve|i have)"
    r" (?:revise[ds]?|rewrit(?:e|ten)|rephrase[ds]?|update[ds]?|improve[ds]?) "
    r"(?:the|my|your|this) (?:response|reply|answer|message)"
    r"|\b(?:here(?:'s| is)|below is) (?:the|a|my) (?:revised|updated|rewritten|improved|new)"
    r" (?:version|response|reply|answer|message)"
    r"|\b(?:revised|updated|rewritten|improved) (?:version|response|reply|answer)\s*:"
    r"|\bas (?:the|a|an) (?:user|customer|assistant|ai|language model|student|agent)\b,"
    r"|\bas an ai\b|\b(?:the|this) (?:reviewer|critic|revision request)\b"
    r"|\bin character\b|\brole[- ]?play"
    r"|\b(?:the )?(?:user|customer|assistant)'s (?:next )?(?:message|reply|response|turn)\b"
    r"|\bnext message\b|\bstage directions?\b|^\s*\(?note:",
    re.I | re.M,
)
# A line opening with a speaker label: the model wrote a script instead of one turn.
_SPEAKER_LABEL = re.compile(
    r"^\s*(?:\[?(?:user|customer|assistant|agent|support agent|student|tutor|ai|human|system)\]?"
    r"(?:\s*\([^)]*\))?\s*:)",
    re.I | re.M,
)
_SCAFFOLDING = tuple(
    marker
    for marker in (
        mk.WHAT_NOW_LABEL,
        mk.ASSISTANT_SAID,
        mk.CONVERSATION_START,
        mk.FACT_ASKED_LABEL,
        mk.MESSAGE_ONLY,
        mk.REVISION_REQUEST,
        mk.FEEDBACK_LABEL,
        mk.REPLY_OPEN,
        mk.INSTRUCTIONS_OPEN,
        mk.FACTS_HEADER,
    )
)


def _meta_commentary(text: str, context: TurnContext) -> str:
    for marker in _SCAFFOLDING:
        if marker.lower() in text.lower():
            return f"prompt scaffolding in the text: {marker!r}"
    label = _SPEAKER_LABEL.search(text)
    if label:
        return f"speaker label: {label.group(0).strip()!r}"
    # The persona's name is the user's own: a label or third-person mention in a *user* turn
    # is scaffolding; the assistant addressing the user by name is fine.
    user = context.speaker == "user" and context.persona
    if user and re.search(rf"^\s*{re.escape(context.persona)}\s*(?:\([^)]*\))?\s*:", text, re.M):
        return f"speaker label: {context.persona!r}"
    if user:
        # Its own name, other than in an introduction: the persona spoken of in the third person.
        name = re.escape(context.persona)
        mention = re.search(rf"\b{name}\b", text)
        intro = re.search(rf"\b(?:i'?m|i am|my name is|this is|it'?s)\s+{name}\b|\b{name} here\b", text, re.I)
        if mention and not intro:
            return f"speaks of {context.persona} in the third person"
    meta = _META.search(text)
    if meta:
        return f"talks about the conversation: {meta.group(0).strip()!r}"
    repeated = _feedback_line_in(text, context.feedback)
    if repeated:
        # The live 0.5B revised a reply into "Correct reasoning briefly and keep replies short.
        # - check answer_not_revealed_early failed: ..." (its feedback, verbatim).
        return f"repeats the reviewer's feedback: {repeated!r}"
    if context.speaker == "user" and re.search(r"\bthe assistant\b", text, re.I):
        return "refers to the assistant in the third person"
    return ""


# A feedback line this short ("- be brief") may be said in a good reply by chance.
_FEEDBACK_LINE_MIN_CHARS = 24


def _feedback_line_in(text: str, feedback: str) -> str:
    """The first line of ``feedback`` (long enough to be telling) that ``text`` repeats."""
    said = " ".join(text.lower().split())
    for line in feedback.splitlines():
        line = " ".join(line.strip().lstrip("-* ").lower().split())
        if len(line) >= _FEEDBACK_LINE_MIN_CHARS and line in said:
            return line
    return ""


# -- copies ---------------------------------------------------------------------------------------


def _similarity(a: list[str], b: list[str]) -> float:
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def _echo(text: str, history: Sequence[tuple[str, str]]) -> str:
    """A turn that mostly repeats one of the last four turns (either side)."""
    words = _words(text)
    if len(words) < 4:
        return ""
    for back, (role, previous) in enumerate(reversed(history[-4:]), start=1):
        earlier = _words(previous)
        if len(earlier) < 4:
            continue
        score = _similarity(words, earlier)
        if score >= 0.75:
            return f"{score:.0%} the same as the {role} turn {back} back"
        match = SequenceMatcher(None, words, earlier, autojunk=False).find_longest_match()
        # Most of this turn lifted verbatim from a longer earlier one (a copy with a tail cut),
        # or a whole earlier turn quoted inside this one.
        if match.size >= 8 and (match.size >= 0.7 * len(words) or match.size >= 0.8 * len(earlier)):
            return f"repeats {match.size} words of the {role} turn {back} back"
    return ""


def _copied_instruction(text: str, instruction: str) -> str:
    """The stage instruction's own wording in the turn (its imperative, its second person).

    Content shared with the instruction is expected ("get a refund for the lamp"); what
    gives a copy away is the instruction's form: its leading verb or its "you" addressed
    to the user simulator, inside a long verbatim run.
    """
    if not instruction:
        return ""
    words, wanted = _words(text), _words(instruction)
    if len(wanted) < 4:
        return ""
    match = SequenceMatcher(None, words, wanted, autojunk=False).find_longest_match()
    if match.size < 6 and match.size < 0.8 * len(wanted):
        return ""
    block = wanted[match.b : match.b + match.size]
    if match.b == 0 or {"you", "your", "assistant"} & set(block):
        return f"copies {match.size} of the stage instruction's {len(wanted)} words"
    return ""


# Things that look like specific facts: ids, dates, amounts. A user simulator that states one
# it was never given has invented it (the end-of-episode consistency check uses it too).
FACT_TOKEN = re.compile(r"\b(?:[A-Z]{2,}-\d{3,}|\d{4}-\d{2}-\d{2})\b|\$\d+(?:\.\d\d)?\b")


def _invented_facts(text: str, context: TurnContext) -> str:
    known = " ".join([context.given, *(value for _, value in context.facts)])
    heard = " ".join(content for role, content in context.history if role == "assistant")
    invented = [t for t in FACT_TOKEN.findall(text) if t not in known and t not in heard]
    return f"states facts it was not given: {', '.join(invented)}" if invented else ""
