"""The ``sim`` backend: an offline, seeded model that plays every role plausibly.

It reads the same prompts a real model would (see ``dramaturg._markers``) and answers from
them with rules and varied templates, seeded by the request so the same request always gets
the same reply. Everything it writes is stored with ``backend = 'sim'``: it is a stand-in
for tests, demos and benchmarks, never training data to ship.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dramaturg import _markers as mk
from dramaturg._model import ModelRequest, ModelResponse
from dramaturg._tokens import count_tokens
from dramaturg.backends._sim_tools import plan_tools, tool_findings

__all__ = ["SimBackend", "SimOptions", "expected_guidance", "is_goodbye", "respond", "respond_text"]

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")
_OFFERED_ANSWER = re.compile(r"(?:\b[a-z]\s*=|answer is|i got|i get|it's)\s*(-?\d+(?:\.\d+)?)", re.I)
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "just",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "please",
        "so",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "up",
        "us",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "i'm",
        "it's",
        "can't",
        "don't",
        "i'd",
        "i've",
        "i'll",
        "am",
        "any",
        "all",
        "some",
        "more",
        "very",
        "also",
        "about",
        "get",
        "got",
    ]
)


@dataclass(frozen=True, slots=True)
class SimOptions:
    """Behaviour knobs of the sim backend.

    Attributes:
        role_flip_rate: share of user-simulator turns where it wrongly talks like the
            assistant (a real failure mode, planted so the detector has work to do).
        mistake_rate: share of assistant replies with one planted, identifiable mistake
            (padding, an omitted required fact, or a broken constraint), recorded in the
            call's annotations so pair correctness can be measured.
    """

    role_flip_rate: float = 0.0
    mistake_rate: float = 0.25


class SimBackend:
    """Offline backend. Deterministic: the reply is a function of the request alone."""

    name = "sim"
    paid = False  # replies are computed here: repeating one costs nothing

    def __init__(self, options: SimOptions | None = None):
        self.options = options or SimOptions()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        # Tool traffic is not conversation: the text roles read what was said; the tool
        # policy reads the calls and results.
        messages = [
            (
                message.role,
                _without_findings(message.content) if message.role == "assistant" else message.content,
            )
            for message in request.messages
            if message.role != "tool" and not message.tool_calls
        ]
        prompt = request.system + "\n".join(message.content for message in request.messages)
        if request.system.startswith(mk.TOOL_SIMULATOR_HEADER):
            result = simulate_tool_result(request)
            return ModelResponse(
                text=result, input_tokens=count_tokens(prompt), output_tokens=count_tokens(result)
            )
        if request.tools and not _is_role_prompt(request.system):
            # A revision fixes what the critic saw: it plants no tool mistake of its own.
            revising = bool(messages) and messages[-1][1].startswith(mk.REVISION_REQUEST)
            rate = 0.0 if revising else self.options.mistake_rate
            plan = plan_tools(request.tools, request.messages, rate)
            if plan.calls and request.tool_choice != "none":
                calls = "".join(call.arguments for call in plan.calls)
                return ModelResponse(
                    text="",
                    input_tokens=count_tokens(prompt),
                    output_tokens=count_tokens(calls),
                    finish_reason="tool_calls",
                    annotations=(("tool_mistake", plan.mistake),) if plan.mistake else (),
                    tool_calls=plan.calls,
                )
        text, notes = respond(request.system, messages, request.seed, options=self.options)
        findings = tool_findings(request.messages) if request.tools else ""
        if findings:
            text = f"{findings} {text}"
        return ModelResponse(
            text=text,
            input_tokens=count_tokens(prompt),
            output_tokens=count_tokens(text),
            annotations=tuple(sorted(notes.items())),
        )


# What the tools found opens a reply ("I ran lookup order (...)."), so a revision can drop
# it and report what its own calls found instead. One paragraph: the sim's readers are line-based.
_FINDINGS = re.compile(r"^(?:I ran [a-z_ ]+ \([^()]*\)\.\s*)+")


def _without_findings(text: str) -> str:
    return _FINDINGS.sub("", text, count=1)


def _is_role_prompt(system: str) -> bool:
    """Whether a system prompt is one of dramaturg's own roles (they never call tools)."""
    headers = (
        mk.USER_SIMULATOR_HEADER,
        mk.CRITIC_HEADER,
        mk.JUDGE_HEADER,
        mk.VERIFIER_HEADER,
        mk.TOOL_SIMULATOR_HEADER,
        mk.TOPIC_HEADER,
        mk.EVOLVER_HEADER,
        mk.EVOL_JUDGE_HEADER,
    )
    return system.startswith(headers)


def simulate_tool_result(request: ModelRequest) -> str:
    """A simulated tool's result: JSON following the result schema, agreeing with the facts.

    A property named like an argument echoes it; one named like a fact of the episode takes
    the fact's value; the rest get plausible values of their type, seeded by the request.
    """
    schema: dict[str, Any] = request.response_format.schema_dict() if request.response_format else {}
    arguments: dict[str, Any] = {}
    if request.messages:
        text = request.messages[-1].content.partition("Arguments:")[2].strip()
        try:
            loaded = json.loads(text) if text else {}
            arguments = loaded if isinstance(loaded, dict) else {}
        except json.JSONDecodeError:
            arguments = {}
    facts: dict[str, str] = {}
    in_facts = False
    for line in request.system.splitlines():
        if line.startswith(mk.TOOL_FACTS_HEADER):
            in_facts = True
        elif in_facts and line.startswith("- "):
            key, _, value = line[2:].partition(":")
            facts[key.strip().lower().replace(" ", "_")] = value.strip()
    rng = random.Random(hashlib.sha256(request.hash.encode()).hexdigest())
    properties: dict[str, Any] = schema.get("properties", {})
    return json.dumps(
        {name: _plausible(name, spec, arguments, facts, rng) for name, spec in properties.items()},
        sort_keys=True,
    )


def _plausible(
    name: str, spec: Any, arguments: dict[str, Any], facts: dict[str, str], rng: random.Random
) -> Any:
    kind = spec.get("type") if isinstance(spec, dict) else None
    if name in arguments:
        return arguments[name]
    if isinstance(spec, dict) and spec.get("enum"):
        return spec["enum"][0]
    if name in facts:
        value = facts[name]
        if kind in {"number", "integer"}:
            try:
                return int(float(value)) if kind == "integer" else float(value)
            except ValueError:
                pass
        elif kind == "string":
            return value
    if kind == "boolean":
        return True
    if kind == "integer":
        return rng.randint(1, 9)
    if kind == "number":
        return round(rng.uniform(20, 400), 2)
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return f"{name.replace('_', ' ')} {rng.randint(100, 999)}"


def respond_text(
    system: str,
    messages: Sequence[tuple[str, str]],
    seed: int,
    *,
    options: SimOptions | None = None,
) -> str:
    """The sim's reply to a conversation, as plain text.

    Also used by the fake HTTP API so the real SDKs receive the same plausible replies.
    """
    return respond(system, messages, seed, options=options)[0]


def respond(
    system: str,
    messages: Sequence[tuple[str, str]],
    seed: int,
    *,
    options: SimOptions | None = None,
) -> tuple[str, dict[str, str]]:
    """The sim's reply and its annotations (ground truth about what it did, e.g. planted mistakes)."""
    from dramaturg.backends import _sim_recipes as recipes
    from dramaturg.backends import _sim_review as review

    options = options or SimOptions()
    digest = hashlib.sha256(repr((system, list(messages), seed)).encode()).hexdigest()
    rng = random.Random(digest)
    if system.startswith(mk.USER_SIMULATOR_HEADER):
        return _UserSimulator(system, messages, rng, options).reply(), {}
    if system.startswith(mk.TOPIC_HEADER):
        return recipes.expand_topic(system, rng), {}
    if system.startswith(mk.EVOLVER_HEADER):
        return recipes.evolve(system, messages[-1][1] if messages else "", rng), {}
    if system.startswith(mk.EVOL_JUDGE_HEADER):
        return recipes.judge_evolution(messages[-1][1] if messages else ""), {}
    if system.startswith(mk.CRITIC_HEADER):
        return review.critique(system, messages[-1][1] if messages else "", rng), {}
    if system.startswith(mk.JUDGE_HEADER):
        return review.judge(system, messages[-1][1] if messages else ""), {}
    if system.startswith(mk.VERIFIER_HEADER):
        return review.verify_goal(messages[-1][1] if messages else ""), {}
    if messages and messages[-1][1].startswith(mk.REVISION_REQUEST):
        return review.revise(messages), {"planted": "none", "revision": "yes"}
    return _Assistant(system, messages, rng, options).reply()


# -- text helpers ---------------------------------------------------------------------------------


def _content_words(text: str) -> set[str]:
    return {w.lower().strip("'") for w in _WORD.findall(text)} - _STOPWORDS


def _sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+|\n+", text)
    return [p.strip(" -*\t") for p in parts if len(p.strip(" -*\t").split()) >= 4]


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _end_sentence(text: str, mark: str = ".") -> str:
    text = text.strip().rstrip(".!?;:,")
    return text + mark


_PRONOUNS = [
    (r"\byou are\b", "I am"),
    (r"\byou're\b", "I'm"),
    (r"\byou've\b", "I've"),
    (r"\byou'll\b", "I'll"),
    (r"\byourself\b", "myself"),
    (r"\byours\b", "mine"),
    (r"\byour\b", "my"),
    (r"\bare you\b", "am I"),
    (r"\bwere you\b", "was I"),
]


_SUBJECT_VERBS = (
    "got|get|think|thought|have|had|want|need|can|could|will|would|did|do|know|feel|deserve|"
    "were|should|may|might|paid|bought|ordered|tried|found|now|just|still|really"
)


def first_person(text: str) -> str:
    """Turn a second-person stage instruction into the user's own voice."""
    out = text.strip()
    for pattern, replacement in _PRONOUNS:
        out = re.sub(pattern, replacement, out, flags=re.IGNORECASE)
    # "you" as a subject becomes "I", elsewhere "me".
    out = re.sub(r"(^|[,.;:!?]\s*|\b(?:that|if|whether|and|but|so|because|when)\s+)you\b", r"\1I", out)
    out = re.sub(r"\byou\b(?=\s+(?:" + _SUBJECT_VERBS + r")\b)", "I", out)
    out = re.sub(r"\byou\b", "me", out)
    out = re.sub(r"\bthe assistant (\w+?)s\b", r"you \1", out, flags=re.IGNORECASE)
    out = re.sub(r"\bthe assistant\b", "you", out, flags=re.IGNORECASE)
    return out


# -- the user simulator ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Persona:
    name: str
    traits: tuple[str, ...]
    mood: str
    goal: str
    facts: tuple[tuple[str, str], ...]
    description: str = ""


def _parse_persona(system: str) -> _Persona:
    def field(label: str) -> str:
        for line in system.splitlines():
            if line.startswith(label):
                return line[len(label) :].strip()
        return ""

    facts: list[tuple[str, str]] = []
    in_facts = False
    for line in system.splitlines():
        if line.startswith(mk.FACTS_HEADER):
            in_facts = True
            continue
        if in_facts:
            if not line.startswith("- "):
                break
            key, _, value = line[2:].partition(":")
            facts.append((key.strip(), value.strip()))
    traits = tuple(t.strip().lower() for t in field(mk.TRAITS_LABEL).split(",") if t.strip())
    return _Persona(
        name=field(mk.PERSONA_LABEL),
        traits=traits,
        mood=field(mk.MOOD_LABEL).lower(),
        goal=field(mk.GOAL_LABEL),
        facts=tuple(facts),
        description=field(mk.DESCRIPTION_LABEL),
    )


@dataclass(frozen=True, slots=True)
class _Direction:
    instruction: str
    terminal: bool


def _split_direction(text: str) -> tuple[str, _Direction | None]:
    """Separate the assistant's words from the cue that follows them."""
    index = text.rfind("\n" + mk.DIRECTOR_PREFIX + " ")
    if index < 0 and text.startswith(mk.DIRECTOR_PREFIX + " "):
        index = 0
    said = text if index < 0 else text[:index]
    said = said.replace(mk.CONVERSATION_START, "").strip().removeprefix(mk.ASSISTANT_SAID).strip()
    if index < 0:
        return said, None
    # The cue is one line; what follows it (asked-for facts, the reminder) is not the instruction.
    note = text[index:].strip().split("\n", 1)[0]
    instruction = note.partition(mk.WHAT_NOW_LABEL)[2].replace(mk.TERMINAL_NOTE, "").strip()
    return said, _Direction(instruction=instruction, terminal=mk.TERMINAL_NOTE in note)


_OPENERS = {
    "impatient": ["Look,", "Honestly,", "Okay, quickly:", "Right,", "Listen,"],
    "frustrated": ["This is really frustrating.", "I'm pretty annoyed, to be honest.", "Ugh.", "Seriously,"],
    "angry": ["This is unacceptable.", "I'm not happy about this.", "Frankly,"],
    "friendly": ["Hi there!", "Hello!", "Hey, thanks for helping.", "Good morning!"],
    "polite": ["Hello, I hope you're well.", "Hi, sorry to bother you.", "Good afternoon."],
    "confused": ["Sorry, I'm a bit lost here.", "Um, okay.", "I'm not sure I follow, but", "Hmm."],
    "anxious": ["Sorry, I'm a little worried about this.", "I hope this is okay to ask.", "Um,"],
    "curious": ["Oh, interesting.", "Okay!", "Huh."],
    "terse": [""],
}
_NEUTRAL_OPENERS = ["Hi.", "Hello.", "Okay.", "Alright.", "Sure.", "So,", "Well,", ""]
_GOAL_FRAMES = [
    "I'm hoping to {goal}.",
    "I need to {goal}.",
    "I'd like to {goal}.",
    "I'm trying to {goal}.",
    "I'm writing because I want to {goal}.",
    "Could you help me {goal}?",
    "I was wondering if you could help me {goal}.",
]
_ASK_FOR_FRAMES = [
    "Could I get {rest}?",
    "Can you give me {rest}?",
    "Would you mind giving me {rest}?",
    "I could use {rest}.",
]
_REVEAL_FRAMES = [
    "My {key} is {value}.",
    "Sure, the {key} is {value}.",
    "It's {value} (that's the {key}).",
    "{key_cap}: {value}.",
    "Yes, {value} is my {key}.",
    "Let me check... the {key} is {value}.",
]
_ASK_FRAMES = [
    "Can you tell me {rest}?",
    "Could you explain {rest}?",
    "I'd like to know {rest}.",
    "Quick question: {rest}?",
    "What about {rest}?",
]
_CLOSINGS = [
    "Thanks, that's all I needed.",
    "Great, thank you for your help!",
    "Okay, thanks. Bye.",
    "Perfect, I appreciate it.",
    "Alright, thanks for sorting that out.",
    "Thank you, have a good day.",
    "Got it, thanks a lot!",
]
# The assistant handed the person over (an escalation, a transfer to a human): the chat ends
# there with the transfer marker, as tau2-bench's user simulator does.
_HANDED_OVER = re.compile(
    r"\b(?:escalated|transferr(?:ed|ing) you|hand(?:ed|ing) (?:you|this) over|a (?:human|supervisor) will)\b"
    r"|\bI ran escalate\b",
    re.I,
)
_AFTER_HANDOFF = [
    "Okay, I'll wait to hear from them.",
    "Fine, thanks. I'll wait for the supervisor.",
    "Alright, thank you for passing it on.",
]
_FLIPPED = [
    "How can I help you today?",
    "I'd be happy to help you with that. Is there anything else I can assist you with?",
    "As an AI assistant, I can help you with your request.",
]


class _UserSimulator:
    def __init__(
        self,
        system: str,
        messages: Sequence[tuple[str, str]],
        rng: random.Random,
        options: SimOptions,
    ):
        self.persona = _parse_persona(system)
        self.rng = rng
        self.options = options
        said_to_me, self.direction = _split_direction(messages[-1][1] if messages else "")
        self.assistant_said = said_to_me
        self.my_history = " ".join(content for role, content in messages if role == "assistant")
        self.first_turn = not any(role == "assistant" for role, _ in messages)

    def reply(self) -> str:
        rng = self.rng
        if self.options.role_flip_rate and rng.random() < self.options.role_flip_rate:
            return rng.choice(_FLIPPED)
        if not self.first_turn and _HANDED_OVER.search(self.assistant_said):
            return f"{rng.choice(_AFTER_HANDOFF)} {mk.TRANSFER_MARKER}"
        parts: list[str] = []
        opener = self._opener()
        if opener:
            parts.append(opener)
        if self.first_turn and self.persona.goal:
            goal = first_person(self.persona.goal)
            parts.append(rng.choice(_GOAL_FRAMES).format(goal=goal.rstrip(".")))
        revealed = self._reveal_asked_facts()
        parts.extend(revealed)
        direction = self.direction
        if direction and direction.instruction and not (revealed and _is_give(direction.instruction)):
            parts.append(self._act(direction.instruction))
        if direction and direction.terminal and rng.random() < 0.3:
            parts.append(mk.END_MARKER)
        text = _join(parts)
        return text or rng.choice(_CLOSINGS)

    def _opener(self) -> str:
        pool: list[str] = []
        for trait in (*self.persona.traits, self.persona.mood):
            pool.extend(_OPENERS.get(trait, []))
        if not pool:
            pool = _NEUTRAL_OPENERS
        if "terse" in self.persona.traits or (not self.first_turn and self.rng.random() < 0.5):
            return ""
        return self.rng.choice(pool)

    def _reveal_asked_facts(self) -> list[str]:
        asked = _content_words(self.assistant_said)
        lines = []
        for key, value in self.persona.facts:
            if value.lower() in self.my_history.lower():
                continue  # already told them
            if _content_words(key) & asked:
                frame = self.rng.choice(_REVEAL_FRAMES)
                lines.append(frame.format(key=key, key_cap=_capitalize(key), value=value))
        return lines

    def _act(self, instruction: str) -> str:
        rng = self.rng
        text = first_person(instruction).strip().rstrip(".")
        text = re.sub(r"^(?:say hello|greet you) and\s+", "", text, flags=re.I)
        verb, _, rest = text.partition(" ")
        verb = verb.lower()
        rest = rest.strip()
        if (
            self.first_turn
            and _content_words(rest)
            and (len(_content_words(rest) - _content_words(self.persona.goal)) <= 1)
        ):
            return ""  # the opening already said it
        if verb in {"ask", "question"}:
            if rest.lower().startswith("for help "):
                task = rest[len("for help ") :].rstrip("?")
                return rng.choice(
                    ["Could you help me with {t}?", "Can you give me a hand {t}?", "I need help {t}."]
                ).format(t=task.removeprefix("with "))
            if rest.lower().startswith("for "):
                return rng.choice(_ASK_FOR_FRAMES).format(rest=rest[4:].rstrip("?"))
            rest = re.sub(r"^(?:about|if)\s+", "", rest)
            return rng.choice(_ASK_FRAMES).format(rest=rest.rstrip("?"))
        if verb in {"explain", "describe", "mention", "say", "tell", "state", "report", "admit", "claim"}:
            rest = re.sub(r"^(?:me\s+|you\s+)?(?:again\s+)?(?:that\s+)?", "", rest)
            rest = rest.replace(" and that ", " and ")
            lead = rng.choice(["", "So, ", "Basically, ", "The thing is, ", "Well, "])
            return _end_sentence(lead + rest if lead else _capitalize(rest))
        if verb in {"thank", "close", "end", "finish", "conclude"} or "goodbye" in text.lower():
            return rng.choice(_CLOSINGS)
        if verb in {"insist", "push", "complain", "object", "argue", "disagree"}:
            rest = re.sub(r"^(?:back\s+)?(?:on\s+|that\s+)?", "", rest)
            lead = rng.choice(["I really think", "I still feel", "Honestly, I believe", "I have to insist:"])
            return _end_sentence(f"{lead} {rest}")
        if verb in {"greet", "introduce"}:
            return rng.choice(["Hi!", "Hello there.", "Hey."])
        if verb in {"give", "provide", "share", "offer"}:
            volunteered = self._volunteer_facts()
            return volunteered or _end_sentence(f"Let me {verb} {rest}")
        if verb in {"accept", "agree", "confirm"}:
            return _end_sentence(rng.choice(["Okay, I ", "Fine, I ", "Alright, I "]) + text)
        return _end_sentence(rng.choice(["I'd like to ", "I want to ", "Let me ", "I'm going to "]) + text)

    def _volunteer_facts(self) -> str:
        unsaid = [(k, v) for k, v in self.persona.facts if v.lower() not in self.my_history.lower()]
        if not unsaid:
            return ""
        shown = "; ".join(f"{key}: {value}" for key, value in unsaid[:2])
        return self.rng.choice(["Here are my details: {d}.", "In case it helps: {d}.", "{d}."]).format(
            d=shown
        )


def _join(parts: Sequence[str]) -> str:
    """Join phrases; a phrase after an opener ending in a comma continues the sentence."""
    out = ""
    for part in (p for p in parts if p):
        if out.endswith(",") and not part.startswith(("I ", "I'")):
            part = part[:1].lower() + part[1:]
        out = f"{out} {part}" if out else part
    return out


def _is_give(instruction: str) -> bool:
    return instruction.lower().split(" ", 1)[0] in {"give", "provide", "share", "answer"}


# -- the assistant --------------------------------------------------------------------------------

_ACKS = [
    "Thanks for reaching out.",
    "I understand.",
    "Thanks for the details.",
    "Got it.",
    "I'm sorry to hear that.",
    "Thank you for explaining.",
    "That makes sense.",
    "Understood.",
]
_CITE_FRAMES = [
    "{s}",
    "Just so you know: {s}",
    "Here's how this works: {s}",
    "One thing to keep in mind: {s}",
    "According to our guidelines, {s_low}",
]
_NEXT_STEPS = [
    "Could you tell me a bit more so I can help?",
    "What would you like to do next?",
    "Let me know how you'd like to proceed.",
    "Is there anything specific you'd like me to check?",
    "I can take care of the next step whenever you're ready.",
]
_FOLLOW_UPS = [
    "Good question; let me walk you through it.",
    "Let's go through that step by step.",
    "Happy to explain.",
    "Sure, here's the short version.",
]
_CORRECT = ["That's right, well done!", "Correct! Nice work.", "Exactly right.", "Yes, that's the answer."]
_INCORRECT = [
    "Not quite. Let's look at your steps again.",
    "Close, but that's not it yet. Check your arithmetic.",
    "That isn't correct yet; try working through it once more.",
]
_ASK_DIRECTIVE = re.compile(
    r"^(?:always\s+)?(?:first\s+)?(?:ask|request)\s+(?:the\s+\w+\s+)?(?:for|about)\s+(.+)$", re.I
)
_ASK_FORMS = [
    "Could you share {wanted}?",
    "Can you give me {wanted}?",
    "To look into this, I'll need {wanted}.",
    "Could you send me {wanted}, please?",
]
# Directives and answer keys are instructions to the assistant, not things to recite.
_NOT_CITABLE = re.compile(
    r"^(?:you|your|never|do not|don't|always|ask|request|be|keep|follow|today|the student|praise)\b"
    r"|answer key|correct answer",
    re.I,
)
_GOODBYE_CUES = (
    "bye",
    "that's all",
    "thanks a lot",
    "thank you for your help",
    "appreciate",
    "good day",
    "thanks for sorting",
)
_GOODBYES = [
    "You're welcome! Have a great day.",
    "Glad I could help. Take care!",
    "Happy to help. Goodbye!",
    "Anytime. All the best!",
]


class _Assistant:
    def __init__(
        self,
        system: str,
        messages: Sequence[tuple[str, str]],
        rng: random.Random,
        options: SimOptions | None = None,
    ):
        self.system = system
        self.rng = rng
        self.options = options or SimOptions()
        self.user_said = messages[-1][1] if messages else ""
        self.history = " ".join(content for role, content in messages if role == "assistant")
        self.first_turn = not any(role == "assistant" for role, _ in messages)

    def reply(self) -> tuple[str, dict[str, str]]:
        from dramaturg.backends import _sim_review as review

        rng = self.rng
        if is_goodbye(self.user_said) and not self.first_turn:
            return rng.choice(_GOODBYES), {"planted": "none"}
        parts = ["Hello!" if self.first_turn and rng.random() < 0.5 else "", rng.choice(_ACKS)]
        verdict = self._check_answer()
        if verdict:
            parts.append(verdict)
        guidance = expected_guidance(self.system, self.user_said, self.history)
        mistake = "none"
        if rng.random() < self.options.mistake_rate:
            mistake = review.choose_mistake(self.system, guidance, rng)
        if guidance and mistake != "omission":
            frame = rng.choice(_CITE_FRAMES)
            parts.append(
                frame.format(
                    s=_end_sentence(guidance), s_low=_end_sentence(guidance[:1].lower() + guidance[1:])
                )
            )
        if "?" in self.user_said and not guidance:
            parts.append(self.rng.choice(_FOLLOW_UPS))
        if mistake == "violation":
            parts.append(review.violating_sentence(self.system, rng))
        question = self._pending_question()
        parts.append(question or rng.choice(_NEXT_STEPS))
        if mistake == "padding":
            parts[1:1] = rng.sample(review.FILLERS, 2)
        return " ".join(p for p in parts if p), {"planted": mistake}

    def _pending_question(self) -> str:
        """The first thing the prompt says to ask for that has not been asked yet."""
        for sentence in _sentences(self.system):
            match = _ASK_DIRECTIVE.match(sentence)
            if not match:
                continue
            wanted = re.sub(r"\b(?:their|his|her)\b", "your", match.group(1).rstrip(".!"))
            if wanted.lower() in self.history.lower():
                continue
            return self.rng.choice(_ASK_FORMS).format(wanted=wanted)
        return ""

    def _check_answer(self) -> str:
        """Compare a number the user offers with an answer key in the prompt, if there is one."""
        key = re.search(
            r"(?:correct answer|answer key)\s*(?:is|:)\s*(" + _NUMBER.pattern + ")", self.system, re.I
        )
        offered = _OFFERED_ANSWER.findall(self.user_said)
        if not key or not offered:
            return ""
        return self.rng.choice(_CORRECT if key.group(1) in offered else _INCORRECT)


def is_goodbye(user_said: str) -> bool:
    lowered = user_said.lower()
    return any(word in lowered for word in _GOODBYE_CUES)


def expected_guidance(system: str, user_said: str, history: str) -> str:
    """The instruction sentence most relevant to the user's message, not yet cited.

    A good sim reply always includes it; the sim critic flags its absence as an omission.
    """
    if is_goodbye(user_said):
        return ""
    user_words = _content_words(user_said)
    best, best_score = "", 0
    for sentence in _sentences(system):
        if sentence.lower().rstrip(".") in history.lower() or _NOT_CITABLE.search(sentence):
            continue
        score = len(_content_words(sentence) & user_words)
        if score > best_score:
            best, best_score = sentence, score
    return best
