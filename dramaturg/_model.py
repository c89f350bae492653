"""Values that cross the model layer: requests, responses, model specs and the backend protocol."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from dramaturg._errors import ConfigError

__all__ = [
    "HASH_TAG",
    "Backend",
    "GenerationParams",
    "Message",
    "ModelRequest",
    "ModelResponse",
    "ModelSpec",
    "RateLimits",
    "ResponseFormat",
    "RoleName",
    "ToolCall",
    "ToolChoice",
    "ToolResult",
    "ToolSpec",
    "ToolStep",
    "request_hash",
    "tool_calls_from_json",
    "tool_steps_json",
]

RoleName = Literal["user_simulator", "assistant", "critic", "verifier", "tool_simulator"]
MessageRole = Literal["user", "assistant", "tool"]
ToolChoice = Literal["auto", "none"]

# Bump the tag whenever the canonical form below changes, so old cache rows can never be
# mistaken for answers to differently-shaped requests.
HASH_TAG = "dh1-sha256"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call an assistant reply asks for: ``arguments`` is the JSON text the model wrote."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool call returned, as the model reads it back (an error is text too)."""

    call_id: str
    content: str
    is_error: bool = False
    status: str = "ok"  # ok | invalid (never ran: unknown tool, bad arguments) | error (it raised)


@dataclass(frozen=True, slots=True)
class ToolStep:
    """One round of an assistant turn: the calls the model asked for and their results."""

    calls: tuple[ToolCall, ...]
    results: tuple[ToolResult, ...]


def tool_calls_from_json(text: str | None) -> tuple[ToolCall, ...]:
    """Tool calls as stored in ``llm_calls.tool_calls``."""
    return tuple(ToolCall(**call) for call in json.loads(text)) if text else ()


def tool_steps_json(steps: tuple[ToolStep, ...]) -> str | None:
    """Steps as stored (``turns.tool_steps``, ``preference_pairs.*_tool_steps``); None for none."""
    return json.dumps([asdict(step) for step in steps]) if steps else None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as a model is told about it: ``parameters`` is a JSON schema, canonical JSON text."""

    name: str
    description: str
    parameters: str

    @classmethod
    def from_schema(cls, name: str, description: str, parameters: dict[str, object]) -> ToolSpec:
        return cls(name, description, json.dumps(parameters, sort_keys=True, separators=(",", ":")))


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message as a backend sees it (the system prompt travels separately).

    An assistant message may carry ``tool_calls`` (its content may then be empty); a
    ``tool`` message is the result of the call ``tool_call_id`` names; ``is_error`` marks a
    result that is an error (an invalid call, a tool that raised), which Anthropic's API is told.
    """

    role: MessageRole
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Sampling parameters that change the output, and so belong in the request hash."""

    temperature: float = 0.8
    max_tokens: int = 1024


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """A JSON schema the reply must follow, asked of the API itself.

    OpenAI-compatible servers get it as ``response_format`` (``json_schema``; vLLM and
    llama.cpp's server decode under it), Anthropic as a forced tool call. ``schema`` is the
    schema as canonical JSON text (sorted keys), so the request stays hashable and frozen.

    Attributes:
        name: a short identifier (``[A-Za-z0-9_-]``), e.g. ``"critique"``.
        schema: the JSON schema, canonical JSON text.
    """

    name: str
    schema: str

    @classmethod
    def from_schema(cls, name: str, schema: dict[str, object]) -> ResponseFormat:
        return cls(name, json.dumps(schema, sort_keys=True, separators=(",", ":")))

    def schema_dict(self) -> dict[str, object]:
        loaded: dict[str, object] = json.loads(self.schema)
        return loaded


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """Everything that determines a model's output.

    Attributes:
        backend: registered backend name, e.g. ``"sim"`` or ``"anthropic"``.
        model: the model name the backend sends.
        role: which dramaturg role is speaking; different roles never share a cache entry.
        system: the system prompt.
        messages: the conversation, starting with a user message.
        params: sampling parameters.
        seed: the episode-derived seed; providers that accept a seed receive it.
        response_format: the JSON schema the reply must follow, if the role asks for one.
        tools: the tools the model may call.
        tool_choice: ``auto`` (the model decides) or ``none`` (answer in text: the last step
            of a turn that reached its tool-step limit).
    """

    backend: str
    model: str
    role: RoleName
    system: str
    messages: tuple[Message, ...]
    params: GenerationParams = field(default_factory=GenerationParams)
    seed: int = 0
    response_format: ResponseFormat | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"

    @property
    def hash(self) -> str:
        return request_hash(self)


def request_hash(request: ModelRequest) -> str:
    """The cache key of a request: ``"dh1-sha256:" + sha256(canonical JSON)``.

    The canonical JSON holds backend, model, role, system, messages, params and seed with
    sorted keys and no whitespace; ``response_format`` (name and schema) joins them only when
    set, so requests without one keep the hashes they always had; so do ``tools``,
    ``tool_choice`` and a message's ``tool_calls`` and ``tool_call_id``. Timeouts, retry settings,
    API keys and base URLs are deliberately absent: they do not change what the model says.

    Raises:
        ValueError: if the request holds something JSON cannot represent exactly (a NaN
            temperature, say). A request that cannot be hashed must never become a silent
            cache miss that pays twice.
    """
    payload = request_dict(request)
    # Fields added after the first release join the payload only when set, so requests that
    # do not use them keep the hashes they always had (and their cached answers).
    if request.response_format is None:
        del payload["response_format"]
    if not request.tools:
        del payload["tools"]
    if request.tool_choice == "auto":
        del payload["tool_choice"]
    for message in payload["messages"]:
        if not message["tool_calls"]:
            del message["tool_calls"]
        if message["tool_call_id"] is None:
            del message["tool_call_id"]
        if not message["is_error"]:
            del message["is_error"]
    if not math.isfinite(request.params.temperature):
        raise ValueError(f"cannot hash a request with temperature {request.params.temperature!r}")
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{HASH_TAG}:{digest}"


def request_dict(request: ModelRequest) -> dict[str, Any]:
    """The request as JSON-ready data, every field present: what ``llm_calls.request`` stores.

    The same dict ``dataclasses.asdict`` gives, built without its deep copy of every value
    (a request holds only frozen values): this runs twice per model call.
    """
    payload: dict[str, Any] = _plain(request)
    return payload


def request_json(request: ModelRequest) -> str:
    """:func:`request_dict` as the JSON text stored with each call (sorted keys)."""
    return json.dumps(request_dict(request), sort_keys=True, ensure_ascii=False)


def _plain(value: object) -> Any:
    kind = type(value)
    if kind in _SCALARS:
        return value
    names = _FIELD_NAMES.get(kind)
    if names is None and is_dataclass(kind):
        names = _FIELD_NAMES[kind] = tuple(field.name for field in fields(kind))
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in names}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


_SCALARS = frozenset({str, int, float, bool, type(None)})
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # per dataclass, filled on first sight


@dataclass(frozen=True, slots=True)
class RateLimits:
    """What a provider's rate-limit headers said about the caller's budget, at one response.

    Both APIs send them with every response (``x-ratelimit-*`` from OpenAI,
    ``anthropic-ratelimit-*`` from Anthropic); the gateway's limiter learns the server's
    limits from them. Absent values are None.
    """

    requests_per_minute: float | None = None
    requests_remaining: int | None = None
    requests_reset_s: float | None = None  # until the request budget is whole again
    tokens_per_minute: float | None = None
    tokens_remaining: int | None = None
    tokens_reset_s: float | None = None


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """What a backend returns. Token counts are the provider's own, when it reports them."""

    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str = "stop"
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    # Backend notes stored with the call, never shown to models: the sim records the
    # mistakes it planted here, so pair correctness can be measured against ground truth.
    annotations: tuple[tuple[str, str], ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    # Read from the response's headers; never stored (a cached answer has none).
    rate_limits: RateLimits | None = None


@runtime_checkable
class Backend(Protocol):
    """A model provider. One async method; no retries, sleeps or rate limits here.

    Implementations raise :class:`~dramaturg.BackendError` with the right ``kind`` and
    ``retry_after`` so the gateway can decide what to do.

    A backend whose calls cost nothing to make again (the sim) may set ``paid = False``:
    the gateway then uses its replies without waiting for their records to be durable, so
    the records batch freely. Every other backend's reply is used only once its record is.
    """

    name: str

    async def complete(self, request: ModelRequest) -> ModelResponse: ...


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """``BACKEND[:MODEL]`` as written on the command line, e.g. ``anthropic:claude-sonnet-4-5``."""

    backend: str
    model: str

    @classmethod
    def parse(cls, spec: str, *, known_backends: frozenset[str]) -> ModelSpec:
        backend, _, model = spec.strip().partition(":")
        if backend not in known_backends:
            names = ", ".join(sorted(known_backends))
            raise ConfigError(
                f"model spec '{spec}': unknown backend '{backend}' (expected one of: {names}; "
                "write BACKEND:MODEL, e.g. sim or anthropic:claude-sonnet-4-5)"
            )
        if backend != "sim" and not model:
            raise ConfigError(
                f"model spec '{spec}': backend '{backend}' needs a model name, e.g. {backend}:MODEL"
            )
        return cls(backend=backend, model=model or backend)

    def __str__(self) -> str:
        return f"{self.backend}:{self.model}"
