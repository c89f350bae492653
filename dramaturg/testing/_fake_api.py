"""A real local HTTP fake of the Anthropic Messages and OpenAI Chat Completions APIs.

The real SDKs talk to it over a real socket, so tests exercise their retry, timeout and
error-mapping code instead of a mocked transport. Faults are injected deterministically from
(config seed, canonical body hash, attempt number), so a retried request can succeed and a
test can predict exactly which attempt fails.

The server half is standard library only (``http.server``); pydantic is used solely to
validate the config, so typos in a config fail loudly in both the server and the handle.

Run it directly::

    python -m dramaturg.testing._fake_api --port 0 --config '{"latency_ms": 200}'

It prints ``LISTENING <port> <pid>`` once it accepts connections.

Structured replies: the OpenAI route accepts ``response_format`` (``json_schema`` or
``json_object``) and returns the responder's text as is; the Anthropic route accepts ``tools``
with a forced ``tool_choice`` and answers with a ``tool_use`` block holding the responder's
text parsed as a JSON object (a text block when it is not one).

Tools: both routes accept tool declarations, tool calls and tool results, and refuse
malformed tool traffic with a 400 as the real APIs do (see ``_fake_wire``). A *request
responder* (marked with :func:`request_responder`) receives the whole request as a
``ModelRequest`` and may answer with tool calls, which go out in the provider's shape
(``tool_calls`` with finish reason ``tool_calls``; ``tool_use`` blocks with stop reason
``tool_use``). ``responder="sim"`` plays the sim backend itself, tools included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import IO, Any, Literal, Self, TypeGuard, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dramaturg._model import ModelRequest, ModelResponse, ToolCall
from dramaturg.testing._fake_wire import (
    BadRequest,
    Conversation,
    anthropic_conversation,
    anthropic_reply_content,
    openai_conversation,
    openai_reply_message,
)

DEFAULT_RESPONDER = "dramaturg.backends._sim:respond_text"
ECHO_LIMIT = 200
LAST_BODIES = 16  # request bodies kept for stats()["last_bodies"]

Provider = Literal["anthropic", "openai"]
Responder = Callable[[str, list[tuple[str, str]], int], str]
RequestResponder = Callable[[ModelRequest], ModelResponse]
_REQUEST_MARK = "__fake_api_takes_request__"
SIM_RESPONDER = "sim"
Fault = Literal["429", "529", "500", "drop", "malformed"]


class FakeAPIConfig(BaseModel):
    """Behaviour of a running fake API server; every field can be changed at runtime.

    Fault rates are probabilities per model request and are decided deterministically from
    ``seed``, the canonical body hash and how many times that body has been seen, so a retry
    of the same request gets a fresh (but reproducible) draw.

    Attributes:
        latency_ms: Delay applied to every model request before it is answered.
        seed: Seeds the fault decisions.
        responder: ``"echo"``, ``"sim"`` (the sim backend, tool calls included) or
            ``"module:function"`` called as ``fn(system, messages, seed) -> str``, or, if
            marked with :func:`request_responder`, as ``fn(request) -> ModelResponse``. If the
            default cannot be imported the server falls back to echo.
        reject_keys: API keys answered with 401.
        fail_all_status: If set, every model request is answered with this status.
        retry_after_s: Value of the ``retry-after`` header sent with 429s.
        rate_429: Share of requests answered 429 with ``retry-after`` headers.
        rate_529: Share answered "overloaded" (529 on Anthropic, 503 on OpenAI).
        rate_500: Share answered 500.
        rate_drop: Share whose connection is cut halfway through the response body.
        rate_malformed: Share answered 200 with a truncated JSON body.
        refuse_response_format: Answer any OpenAI request carrying ``response_format`` with
            400, as servers without structured output do.
        refuse_json_schema: Answer an OpenAI ``json_schema`` response format the way
            llama-cpp-python's server (0.3.x) does: HTTP 500 with a validation error that
            names ``'json_object'``, which it accepts (with an optional ``schema``).
        rpm_limit: Requests per minute the server enforces for each model, the way the real
            APIs do: over a sliding window of ``rate_window_s`` (600 rpm over 1 s: at most 10
            requests to one model in any second). A request over the limit is answered 429 at
            once, with ``retry-after-ms`` saying when the window next has room, and is not
            counted against the window.
            Every response carries the provider's rate-limit headers
            (``x-ratelimit-*-requests``, ``anthropic-ratelimit-requests-*``).
        rate_window_s: The sliding window ``rpm_limit`` is enforced over.
    """

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(default=0.0, ge=0)
    seed: int = 0
    responder: str = DEFAULT_RESPONDER
    reject_keys: list[str] = Field(default_factory=list)
    fail_all_status: int | None = Field(default=None, ge=400, le=599)
    retry_after_s: float = Field(default=1.0, ge=0)
    rate_429: float = Field(default=0.0, ge=0, le=1)
    rate_529: float = Field(default=0.0, ge=0, le=1)
    rate_500: float = Field(default=0.0, ge=0, le=1)
    rate_drop: float = Field(default=0.0, ge=0, le=1)
    rate_malformed: float = Field(default=0.0, ge=0, le=1)
    refuse_response_format: bool = False
    refuse_json_schema: bool = False
    rpm_limit: float | None = Field(default=None, gt=0)
    rate_window_s: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _rates_are_a_distribution(self) -> Self:
        if sum(rate for _, rate in self.fault_rates()) > 1.0 + 1e-9:
            raise ValueError("fault rates must sum to at most 1")
        return self

    def fault_rates(self) -> list[tuple[Fault, float]]:
        """The fault rates in the fixed order used to map a draw onto a fault."""
        return [
            ("429", self.rate_429),
            ("529", self.rate_529),
            ("500", self.rate_500),
            ("drop", self.rate_drop),
            ("malformed", self.rate_malformed),
        ]


# --------------------------------------------------------------------------- server


_UNPARSEABLE = object()


def canonical_body_hash(body: Any) -> str:
    """SHA-256 hex digest of the canonical JSON form of a request body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def decide_fault(config: FakeAPIConfig, body_hash: str, attempt: int) -> Fault | None:
    """The fault (or None) for the ``attempt``-th arrival (0-based) of a body.

    Args:
        config: Supplies the seed and the fault rates.
        body_hash: ``canonical_body_hash`` of the request body.
        attempt: How many times this body had already been received.

    Returns:
        The fault to inject, or None to answer normally.
    """
    digest = hashlib.sha256(f"{config.seed}:{body_hash}:{attempt}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for fault, rate in config.fault_rates():
        edge += rate
        if draw < edge:
            return fault
    return None


def _blocks_text(content: Any, where: str) -> str:
    """Text of a content field that is either a string or a list of content blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{where}: Input should be a valid string or list of content blocks")
    texts: list[str] = []
    for index, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise BadRequest(f"{where}.{index}: content block must be an object with a type")
        # Images, tool results and the like carry no text a responder can use.
        if block["type"] == "text":
            text = block.get("text")
            if not isinstance(text, str):
                raise BadRequest(f"{where}.{index}.text: Field required")
            texts.append(text)
    return "\n".join(texts)


def _require_model(body: dict[str, Any], message: str) -> None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest(message)


def _parse_anthropic(body: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """Validate a Messages API body the way the real API does; return (system, turns)."""
    _require_model(body, "model: Field required")
    max_tokens = body.get("max_tokens")
    if "max_tokens" not in body:
        raise BadRequest("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest("max_tokens: Input should be a positive integer")
    messages = body.get("messages")
    if "messages" not in body:
        raise BadRequest("messages: Field required")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: at least one message is required")
    turns: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages.{index}: Input should be a valid dictionary")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise BadRequest(f"messages.{index}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            raise BadRequest(f"messages.{index}.content: Field required")
        if index == 0 and role != "user":
            raise BadRequest('messages: first message must use the "user" role')
        if turns and turns[-1][0] == role:
            raise BadRequest(
                'messages: roles must alternate between "user" and "assistant", '
                f'but found multiple "{role}" roles in a row'
            )
        turns.append((role, _blocks_text(message["content"], f"messages.{index}.content")))
    system = _blocks_text(body.get("system"), "system")
    return system, turns


def _parse_openai(body: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """Validate a Chat Completions body; system/developer messages become the system text."""
    _require_model(body, "you must provide a model parameter")
    messages = body.get("messages")
    if "messages" not in body:
        raise BadRequest("Missing required parameter: 'messages'.")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("Invalid 'messages': empty array. Expected an array with minimum length 1.")
    system_parts: list[str] = []
    turns: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"Invalid type for 'messages[{index}]': expected an object.")
        role = message.get("role")
        text = _blocks_text(message.get("content"), f"messages[{index}].content")
        if role in ("system", "developer"):
            system_parts.append(text)
        elif role in ("user", "assistant"):
            turns.append((role, text))
        elif role != "tool":
            raise BadRequest(f"Invalid value for 'messages[{index}].role': {role!r}.")
    return "\n".join(system_parts), turns


_RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")


def _openai_response_format(body: dict[str, Any]) -> str | None:
    """Validate ``response_format`` the way OpenAI does; return its type, None if absent."""
    if "response_format" not in body:
        return None
    fmt = body["response_format"]
    if not isinstance(fmt, dict) or fmt.get("type") not in _RESPONSE_FORMAT_TYPES:
        raise BadRequest(
            "Invalid value for 'response_format.type': expected one of 'text', 'json_object' "
            "or 'json_schema'."
        )
    if fmt["type"] == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise BadRequest("Missing required parameter: 'response_format.json_schema.name'.")
        if "schema" in spec and not isinstance(spec["schema"], dict):
            raise BadRequest("Invalid type for 'response_format.json_schema.schema': expected an object.")
    return str(fmt["type"])


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def echo_responder(system: str, messages: list[tuple[str, str]], seed: int) -> str:
    """Reply ``"echo: "`` plus the last user message, cut to 200 characters."""
    del system, seed
    last_user = next((text for role, text in reversed(messages) if role == "user"), "")
    return f"echo: {last_user}"[:ECHO_LIMIT]


_PROSE_CRITIQUES = (
    "Score: {score}/10. The reply is polite but could mention the policy.",
    "Score: {score}/10. Clear and friendly, though it skips the refund policy.",
    "I'd give this a {score} out of 10: helpful tone, but the policy is never cited.",
)


def prose_critic_responder(system: str, messages: Sequence[tuple[str, str]], seed: int) -> str:
    """The sim's replies, except that the critic answers in prose instead of JSON.

    A server whose critic ignores ``response_format``: the tests of loud failure use it to
    check that unparseable critiques are retried, recorded and finally stop the run.
    """
    from dramaturg._markers import CRITIC_HEADER

    if system.startswith(CRITIC_HEADER):
        template = _PROSE_CRITIQUES[seed % len(_PROSE_CRITIQUES)]
        return template.format(score=5 + seed % 4)
    from dramaturg.backends._sim import respond_text

    return respond_text(system, messages, seed)


def request_responder(function: RequestResponder) -> RequestResponder:
    """Mark ``fn(request: ModelRequest) -> ModelResponse`` as a responder that reads the whole request.

    Such a responder sees tools, tool calls and tool results (a text responder sees only the
    text turns) and may answer with ``ModelResponse.tool_calls``. The request's backend is
    ``sim``; its seed is the body's ``seed``, or one derived from the body when there is none.

    Example::

        @request_responder
        def always_look_up(request: ModelRequest) -> ModelResponse:
            if request.tools and request.tool_choice == "auto" and request.messages[-1].role == "user":
                call = ToolCall("call_1", request.tools[0].name, '{"order_id": "A-1"}')
                return ModelResponse("", 0, 0, finish_reason="tool_calls", tool_calls=(call,))
            return ModelResponse("Done.", 0, 0)
    """
    setattr(function, _REQUEST_MARK, True)
    return function


@request_responder
def sim_responder(request: ModelRequest) -> ModelResponse:
    """The sim backend's reply to the request, tool calls included (``responder="sim"``)."""
    from dramaturg.backends._sim import SimBackend

    # Each handler thread has no event loop of its own; the sim never waits on anything.
    return asyncio.run(SimBackend().complete(request))


def _error_kind(provider: Provider, status: int) -> tuple[str, str | None]:
    """(error type, OpenAI error code) in each provider's vocabulary."""
    if provider == "anthropic":
        anthropic_types = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            413: "request_too_large",
            429: "rate_limit_error",
            529: "overloaded_error",
        }
        return anthropic_types.get(status, "api_error"), None
    openai_kinds: dict[int, tuple[str, str | None]] = {
        400: ("invalid_request_error", None),
        401: ("invalid_request_error", "invalid_api_key"),
        403: ("invalid_request_error", "unsupported_country_region_territory"),
        404: ("invalid_request_error", "model_not_found"),
        429: ("requests", "rate_limit_exceeded"),
    }
    return openai_kinds.get(status, ("server_error", None))


def _error_body(provider: Provider, status: int, message: str) -> dict[str, Any]:
    kind, code = _error_kind(provider, status)
    if provider == "anthropic":
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _rough_tokens(text: str) -> int:
    return len(text) // 4 + 1


@dataclass(frozen=True, slots=True)
class RateWindow:
    """What the sliding-window rate limit made of one request."""

    admitted: bool
    rpm: float
    remaining: int
    free_in_s: float  # until the window has room for one more request

    def headers(self, provider: Provider) -> dict[str, str]:
        """The provider's own rate-limit headers for this state of the window."""
        if provider == "anthropic":
            reset = datetime.now(UTC) + timedelta(seconds=self.free_in_s)
            return {
                "anthropic-ratelimit-requests-limit": f"{self.rpm:g}",
                "anthropic-ratelimit-requests-remaining": str(self.remaining),
                "anthropic-ratelimit-requests-reset": reset.isoformat(timespec="milliseconds").replace(
                    "+00:00", "Z"
                ),
            }
        return {
            "x-ratelimit-limit-requests": f"{self.rpm:g}",
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": f"{round(self.free_in_s * 1000)}ms",
        }


class _State:
    """Config, counters and responder cache shared by all handler threads."""

    def __init__(self, config: FakeAPIConfig) -> None:
        self.lock = threading.Lock()
        self.config = config
        self._responders: dict[str, Responder | RequestResponder] = {}
        self._warned_fallback = False
        self.in_flight = 0
        self.epoch = 0
        self.reset()

    def reset(self) -> None:
        with self.lock:
            # Requests still in flight from before (a client that timed out, say) are answered
            # into the old epoch: they must not count in the new one.
            self.epoch += 1
            self.requests = 0
            self.by_status: dict[str, int] = {}
            self.answered_200 = 0
            self.repeats_after_200 = 0
            self.attempts: dict[str, int] = {}
            self.answered: set[str] = set()
            # in_flight is a live gauge, not a counter: zeroing it would let it go negative.
            self.max_in_flight = self.in_flight
            self.first_request_at: float | None = None
            self.last_response_at: float | None = None
            self.last_bodies: deque[Any] = deque(maxlen=LAST_BODIES)
            # Per model, the arrival times the rate limit counted: providers limit each apart.
            self.windows: dict[str, deque[float]] = {}
            self.rate_limited = 0

    def admit(self, config: FakeAPIConfig, model: str) -> RateWindow | None:
        """Count a request to ``model`` against its sliding window; None when no limit is set."""
        if config.rpm_limit is None:
            return None
        capacity = max(1, int(config.rpm_limit * config.rate_window_s / 60))
        now = time.monotonic()
        with self.lock:
            window = self.windows.setdefault(model, deque())
            while window and window[0] <= now - config.rate_window_s:
                window.popleft()
            admitted = len(window) < capacity
            if admitted:
                window.append(now)
            else:
                self.rate_limited += 1
            # When the window next has room: its oldest request leaves it.
            free_in = window[0] + config.rate_window_s - now if len(window) >= capacity else 0.0
            return RateWindow(admitted, config.rpm_limit, capacity - len(window), max(free_in, 0.0))

    def arrive(self, body_hash: str, body: Any) -> tuple[int, FakeAPIConfig, int]:
        """Count a model request; return its attempt number, the config to answer with and
        the epoch (which ``depart`` is given back)."""
        with self.lock:
            self.requests += 1
            self.last_bodies.append(None if body is _UNPARSEABLE else body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.first_request_at is None:
                self.first_request_at = time.time()
            if body_hash in self.answered:
                self.repeats_after_200 += 1
            attempt = self.attempts.get(body_hash, 0)
            self.attempts[body_hash] = attempt + 1
            return attempt, self.config, self.epoch

    def depart(self, outcome: str, body_hash: str | None, epoch: int) -> None:
        """Record how a model request was answered; body_hash only for well-formed 200s."""
        with self.lock:
            self.in_flight -= 1
            if epoch != self.epoch:
                return
            self.by_status[outcome] = self.by_status.get(outcome, 0) + 1
            self.last_response_at = time.time()
            if body_hash is not None:
                self.answered_200 += 1
                self.answered.add(body_hash)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "by_status": dict(self.by_status),
                "answered_200": self.answered_200,
                "repeats_after_200": self.repeats_after_200,
                "distinct_bodies": len(self.attempts),
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "first_request_at": self.first_request_at,
                "last_response_at": self.last_response_at,
                "last_bodies": list(self.last_bodies),
                "rate_limited": self.rate_limited,
            }

    def merge_config(self, changes: dict[str, Any]) -> FakeAPIConfig:
        with self.lock:
            self.config = FakeAPIConfig.model_validate({**self.config.model_dump(), **changes})
            return self.config

    def responder(self, spec: str) -> Responder | RequestResponder:
        """Import ``module:function`` once; the default falls back to echo if it is missing."""
        if spec == "echo":
            return echo_responder
        if spec == SIM_RESPONDER:
            return sim_responder
        with self.lock:
            cached = self._responders.get(spec)
        if cached is not None:
            return cached
        module_name, _, function_name = spec.partition(":")
        try:
            function: Responder | RequestResponder = getattr(
                importlib.import_module(module_name), function_name
            )
        except Exception as exc:
            # The default is being written alongside this fake and may be missing or
            # half-written; an explicitly chosen responder that fails is a config error.
            if spec != DEFAULT_RESPONDER:
                raise
            function = echo_responder
            with self.lock:
                warn, self._warned_fallback = not self._warned_fallback, True
            if warn:
                print(
                    f"fake_api: cannot import default responder {spec} ({exc!r}); using echo",
                    file=sys.stderr,
                    flush=True,
                )
        with self.lock:
            self._responders[spec] = function
        return function


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so SDK connection pools keep connections alive, as they would in production.
    protocol_version = "HTTP/1.1"
    server_version = "dramaturg-fake-api/1"
    # Reaps idle keep-alive connections so their threads do not live forever.
    timeout = 300
    server: _Server
    _rate_headers: dict[str, str] = {}  # noqa: RUF012 - replaced per request, never mutated
    _departure: Callable[[str, bool], None] | None = None  # counts the model request being answered

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as separate writes; with Nagle's algorithm the body then
        # waits for the client's delayed ACK, adding ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        # One stderr line per request would swamp benchmarks and fill a parent's pipe.
        pass

    def do_GET(self) -> None:
        if self._route() == "/_fake/stats":
            self._send_json(200, self.server.state.stats())
        else:
            self._send_json(404, {"error": f"no route GET {self.path}"})

    def do_POST(self) -> None:
        raw = self._read_body()
        route = self._route()
        if route == "/v1/messages":
            self._model_request("anthropic", raw)
        elif route == "/v1/chat/completions":
            self._model_request("openai", raw)
        elif route == "/_fake/reset":
            self.server.state.reset()
            self._send_json(200, self.server.state.stats())
        elif route == "/_fake/config":
            try:
                changes = json.loads(raw or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("config must be a JSON object")
                config = self.server.state.merge_config(changes)
            except (ValueError, ValidationError) as exc:
                self._send_json(400, {"error": str(exc)})
            else:
                self._send_json(200, config.model_dump())
        else:
            self._send_json(404, {"error": f"no route POST {self.path}"})

    def _route(self) -> str:
        # SDKs add query strings such as `?beta=true`; routing ignores them.
        return urllib.parse.urlsplit(self.path).path

    def _read_body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _api_key(self) -> str | None:
        key = self.headers.get("x-api-key")
        if key:
            return key
        authorization = self.headers.get("authorization") or ""
        scheme, _, token = authorization.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def _model_request(self, provider: Provider, raw: bytes) -> None:
        state = self.server.state
        try:
            body: Any = json.loads(raw)
            body_hash = canonical_body_hash(body)
        except ValueError:
            body = _UNPARSEABLE
            body_hash = hashlib.sha256(raw).hexdigest()
        attempt, config, epoch = state.arrive(body_hash, body)
        # Counted as answered before the first byte goes out: a client that has its answer
        # must find the stats already saying so (and a repeat it sends already a repeat).
        self._departure = lambda outcome, answered: state.depart(
            outcome, body_hash if answered else None, epoch
        )
        try:
            self._answer(provider, body, body_hash, attempt, config)
        finally:
            self._depart("500", answered=False)  # a no-op once an answer went out

    def _depart(self, outcome: str, *, answered: bool) -> None:
        departure, self._departure = self._departure, None
        if departure is not None:
            departure(outcome, answered)

    def _answer(
        self,
        provider: Provider,
        body: Any,
        body_hash: str,
        attempt: int,
        config: FakeAPIConfig,
    ) -> None:
        """Send the response, counting it (``_depart``) just before its first byte."""
        model = body.get("model") if isinstance(body, dict) else None
        window = self.server.state.admit(config, str(model))
        self._rate_headers = window.headers(provider) if window is not None else {}
        if window is not None and not window.admitted:
            headers = {
                "retry-after": f"{window.free_in_s:.3f}",
                "retry-after-ms": str(round(window.free_in_s * 1000)),
            }
            return self._fail(provider, 429, f"rate limit: {window.rpm:g} requests per minute", headers)
        if config.latency_ms > 0:
            time.sleep(config.latency_ms / 1000)
        key = self._api_key()
        if key is None or key in config.reject_keys:
            message = "invalid x-api-key" if provider == "anthropic" else "Incorrect API key provided"
            return self._fail(provider, 401, message)
        if config.fail_all_status is not None:
            status = config.fail_all_status
            return self._fail(provider, status, f"fail_all_status={status}")
        try:
            if body is _UNPARSEABLE:
                raise BadRequest("request body is not valid JSON")
            if not isinstance(body, dict):
                raise BadRequest("request body must be a JSON object")
            parse = _parse_anthropic if provider == "anthropic" else _parse_openai
            system, turns = parse(body)
            format_type = _openai_response_format(body) if provider == "openai" else None
            read = anthropic_conversation if provider == "anthropic" else openai_conversation
            conversation = read(body)
        except BadRequest as exc:
            return self._fail(provider, 400, str(exc))
        if format_type is not None and config.refuse_response_format:
            message = f"response_format {format_type} is not supported by this server"
            return self._fail(provider, 400, message)
        if format_type == "json_schema" and config.refuse_json_schema:
            # llama-cpp-python's words, and its status: it answers validation errors with 500.
            message = (
                "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', "
                "'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}"
            )
            return self._fail(provider, 500, message)

        fault = decide_fault(config, body_hash, attempt)
        if fault == "429":
            retry_after = config.retry_after_s
            headers = {
                "retry-after": f"{retry_after:g}",
                "retry-after-ms": str(round(retry_after * 1000)),
            }
            return self._fail(provider, 429, "rate limited (injected)", headers)
        if fault == "529":
            status = 529 if provider == "anthropic" else 503
            return self._fail(provider, status, "Overloaded (injected)")
        if fault == "500":
            return self._fail(provider, 500, "Internal server error (injected)")

        seed = body.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            seed = int(body_hash[:15], 16)
        model = str(body["model"])
        try:
            responder = self.server.state.responder(config.responder)
            text, calls = _respond(responder, conversation, (system, turns), model, seed)
            reply = _reply_body(provider, model, text, conversation, calls)
        except Exception as exc:  # noqa: BLE001 - any responder bug must reach the client
            traceback.print_exc(file=sys.stderr)
            return self._fail(provider, 500, f"responder {config.responder} failed: {exc!r}")
        payload = json.dumps(reply).encode()
        if fault == "drop":
            self._depart("drop", answered=False)
            self._drop(payload)
            return
        if fault == "malformed":
            self._depart("malformed", answered=False)
            self._send_bytes(200, payload[: len(payload) // 2])
            return
        self._depart("200", answered=True)
        self._send_bytes(200, payload, {**self._request_id_header(provider), **self._rate_headers})

    def _fail(
        self,
        provider: Provider,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        extra = {**self._request_id_header(provider), **self._rate_headers, **(headers or {})}
        self._depart(str(status), answered=False)
        self._send_json(status, _error_body(provider, status, message), extra)

    @staticmethod
    def _request_id_header(provider: Provider) -> dict[str, str]:
        name = "request-id" if provider == "anthropic" else "x-request-id"
        return {name: f"req_{uuid.uuid4().hex[:24]}"}

    def _drop(self, payload: bytes) -> None:
        """Promise the whole body, send half, then cut the connection."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2])
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(body).encode(), headers)

    def _send_bytes(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()


def _respond(
    responder: Responder | RequestResponder,
    conversation: Conversation,
    text_view: tuple[str, list[tuple[str, str]]],
    model: str,
    seed: int,
) -> tuple[str, tuple[ToolCall, ...]]:
    """The responder's text and tool calls, checked against what the request allows.

    A text responder gets ``text_view``, the (system, turns) it always got; a request
    responder gets the whole conversation.
    """
    if _takes_request(responder):
        response = responder(conversation.request(model, seed))
        if not isinstance(response, ModelResponse):
            raise TypeError(f"responder returned {type(response).__name__}, not ModelResponse")
        if response.tool_calls and not conversation.may_call_tools():
            # A real API never calls a tool it was not offered, or when told not to.
            raise ValueError("responder returned tool calls although the request allows none")
        return response.text, response.tool_calls
    system, turns = text_view
    text = cast(Responder, responder)(system, turns, seed)
    if not isinstance(text, str):
        raise TypeError(f"responder returned {type(text).__name__}, not str")
    return text, ()


def _takes_request(responder: Responder | RequestResponder) -> TypeGuard[RequestResponder]:
    return getattr(responder, _REQUEST_MARK, False) is True


def _reply_body(
    provider: Provider, model: str, text: str, conversation: Conversation, calls: tuple[ToolCall, ...] = ()
) -> dict[str, Any]:
    input_tokens = _rough_tokens(conversation.input_text())
    output_tokens = _rough_tokens(text + "".join(call.arguments for call in calls))
    if provider == "anthropic":
        forced_tool = conversation.forced_tool
        tool_input = _json_object(text) if forced_tool is not None else None
        if forced_tool is not None and tool_input is not None:
            content: list[dict[str, Any]] = [
                {
                    "type": "tool_use",
                    "id": f"toolu_{uuid.uuid4().hex[:24]}",
                    "name": forced_tool,
                    "input": tool_input,
                }
            ]
            stop_reason = "tool_use"
        else:
            content, stop_reason = anthropic_reply_content(text, calls)
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
    message, finish_reason = openai_reply_message(text, calls)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops SYNs when dozens of clients connect at once, and a
    # dropped SYN costs the client a one-second retransmit.
    request_queue_size = 512

    def __init__(self, port: int, state: _State) -> None:
        self.state = state
        super().__init__(("127.0.0.1", port), _Handler)


def _exit_on_stdin_eof() -> None:
    # The handle keeps our stdin open; EOF means the parent died without calling stop().
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(4096):
            pass
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: serve until killed."""
    parser = argparse.ArgumentParser(prog="python -m dramaturg.testing._fake_api")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--config", default="{}", help="FakeAPIConfig as JSON")
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="exit when stdin closes (used by FakeAPI so servers do not outlive their parent)",
    )
    args = parser.parse_args(argv)
    try:
        config = FakeAPIConfig.model_validate_json(args.config)
    except ValidationError as exc:
        print(f"fake_api: invalid --config: {exc}", file=sys.stderr)
        return 2
    server = _Server(args.port, _State(config))
    if args.exit_on_stdin_eof:
        threading.Thread(target=_exit_on_stdin_eof, daemon=True).start()
    print(f"LISTENING {server.server_address[1]} {os.getpid()}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


# --------------------------------------------------------------------------- handle


_START_TIMEOUT_S = 20.0
_STOP_GRACE_S = 5.0
# Proxies from the environment must never see calls to our own loopback server.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FakeAPI:
    """Handle on a fake API server running in a child process.

    Start one with ``FakeAPI.start()`` (or ``with FakeAPI.start() as fake:``) and point the
    SDKs at ``anthropic_base_url`` / ``openai_base_url``.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        port: int,
        config: FakeAPIConfig,
        stderr: IO[bytes],
    ) -> None:
        """Wrap an already started server; use ``FakeAPI.start`` instead."""
        self._process = process
        self._port = port
        self._config = config
        self._stderr = stderr

    @classmethod
    def start(cls, config: FakeAPIConfig | None = None) -> FakeAPI:
        """Spawn a server on a free loopback port and wait until it listens.

        Args:
            config: Initial behaviour; defaults to ``FakeAPIConfig()``.

        Returns:
            A handle on the running server.

        Raises:
            RuntimeError: If the server does not report ``LISTENING`` within 20 s; the
                message includes its stderr.
        """
        config = config or FakeAPIConfig()
        # A file, not a pipe: nobody drains stderr while the server runs, and a full pipe
        # would block the server mid-request.
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - owned by the handle until stop()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dramaturg.testing._fake_api",
                "--port",
                "0",
                "--config",
                config.model_dump_json(),
                "--exit-on-stdin-eof",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        try:
            port = _read_listening_port(process, _START_TIMEOUT_S)
        except RuntimeError as exc:
            _terminate(process)
            stderr.seek(0)
            detail = stderr.read().decode(errors="replace").strip()
            _close_streams(process, stderr)
            raise RuntimeError(f"{exc}; server stderr:\n{detail or '(empty)'}") from None
        return cls(process, port, config, stderr)

    @property
    def pid(self) -> int:
        """Process id of the server."""
        return self._process.pid

    @property
    def port(self) -> int:
        """TCP port the server listens on (127.0.0.1)."""
        return self._port

    @property
    def config(self) -> FakeAPIConfig:
        """The config last sent to the server."""
        return self._config

    @property
    def anthropic_base_url(self) -> str:
        """Base URL for ``anthropic.Anthropic(base_url=...)``; the SDK appends ``/v1``."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def openai_base_url(self) -> str:
        """Base URL for ``openai.OpenAI(base_url=...)``."""
        return f"http://127.0.0.1:{self._port}/v1"

    def stats(self) -> dict[str, Any]:
        """Counters since start or the last ``reset()``.

        Returns:
            ``requests``, ``by_status`` (status or ``"drop"``/``"malformed"`` → count),
            ``answered_200``, ``repeats_after_200``, ``distinct_bodies``, ``in_flight``,
            ``max_in_flight``, ``first_request_at``, ``last_response_at`` and
            ``last_bodies`` (the latest model request bodies, oldest first; None for one
            that was not JSON).
        """
        stats: dict[str, Any] = self._call("GET", "/_fake/stats", None)
        return stats

    def reset(self) -> None:
        """Zero the counters and forget which bodies were seen or answered."""
        self._call("POST", "/_fake/reset", {})

    def configure(self, **changes: Any) -> FakeAPIConfig:
        """Change the running server's config; unspecified fields keep their values.

        Args:
            **changes: ``FakeAPIConfig`` fields to change.

        Returns:
            The config now in effect.

        Raises:
            pydantic.ValidationError: If the merged config is invalid; nothing is sent.
        """
        merged = FakeAPIConfig.model_validate({**self._config.model_dump(), **changes})
        self._config = FakeAPIConfig.model_validate(self._call("POST", "/_fake/config", merged.model_dump()))
        return self._config

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s); safe to call twice."""
        _terminate(self._process)
        _close_streams(self._process, self._stderr)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FakeAPI(port={self._port}, pid={self.pid})"

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self._port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with _OPENER.open(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                detail = exc.read().decode(errors="replace")
            raise RuntimeError(f"fake API {method} {path} -> {exc.code}: {detail}") from None


def _read_listening_port(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    buffer = b""
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"fake API did not start within {timeout_s:g} s")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"fake API exited with code {process.wait()} before listening")
            buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode(errors="replace").split()
    if len(line) != 3 or line[0] != "LISTENING":
        raise RuntimeError(f"unexpected first line from fake API: {' '.join(line)!r}")
    return int(line[1])


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _close_streams(process: subprocess.Popen[bytes], stderr: IO[bytes]) -> None:
    for stream in (process.stdin, process.stdout, stderr):
        if stream is not None and not stream.closed:
            stream.close()


if __name__ == "__main__":
    sys.exit(main())
