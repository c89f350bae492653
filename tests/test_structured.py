"""Structured replies: each backend asks its API for the schema, and the gateway falls back once.

The real ``openai`` and ``anthropic`` SDKs talk to the local fake API; the fake keeps the
latest request bodies, so the tests read exactly what went over the wire.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dramaturg.memory import StoreWriter

from dramaturg import BackendError, GenerationParams, Message, ModelRequest, SimBackend, Store
from dramaturg._gateway import Gateway, GatewayStats, RetryPolicy
from dramaturg._markers import CRITIC_HEADER
from dramaturg._model import ResponseFormat, request_hash
from dramaturg.backends import AnthropicBackend, OpenAIBackend, respond_text
from dramaturg.testing import FakeAPI, FakeAPIConfig
from dramaturg.testing._fake_api import prose_critic_responder
from tests.conftest import fake_api_with_responders, point_sdks_at

SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
        "comment": {"type": "string"},
    },
    "required": ["comment", "score"],
    "additionalProperties": False,
}
CRITIQUE = ResponseFormat.from_schema("critique", SCHEMA)
REPLY = {"score": 7, "comment": "Polite; cites the policy."}

RESPONDERS = f"""
import json

def critique(system, messages, seed):
    # Key order differs from the canonical form on purpose.
    return json.dumps({REPLY!r})

def prose(system, messages, seed):
    return "Score: 7/10. Fine."
"""

BASE = FakeAPIConfig(responder="structured_responders:critique", retry_after_s=0.01)
Backend = AnthropicBackend | OpenAIBackend


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeAPI]:
    with fake_api_with_responders(
        BASE, tmp_path_factory.mktemp("responders"), "structured_responders", RESPONDERS
    ) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> FakeAPI:
    return point_sdks_at(server, BASE, monkeypatch)


def make(provider: str, fake: FakeAPI) -> Backend:
    if provider == "anthropic":
        return AnthropicBackend()
    return OpenAIBackend(base_url=fake.openai_base_url)


def request(provider: str, text: str = "Score this reply.", **changes: Any) -> ModelRequest:
    fields: dict[str, Any] = {
        "backend": provider,
        "model": "model-x",
        "role": "critic",
        "system": "You are a critic.",
        "messages": (Message("user", text),),
        "params": GenerationParams(temperature=0.0, max_tokens=64),
        "seed": 3,
        "response_format": CRITIQUE,
        **changes,
    }
    return ModelRequest(**fields)


def complete(backend: Backend, *requests: ModelRequest) -> list[str]:
    async def go() -> list[str]:
        try:
            return [(await backend.complete(req)).text for req in requests]
        finally:
            await backend.aclose()

    return asyncio.run(go())


def last_body(fake: FakeAPI) -> dict[str, Any]:
    body: dict[str, Any] = fake.stats()["last_bodies"][-1]
    return body


class NoSleep:
    """A clock whose sleeps return at once and are remembered."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def now(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def through_gateway(
    backend: Backend, db: Path, *requests: ModelRequest, clock: NoSleep | None = None
) -> tuple[list[str], GatewayStats]:
    """Answer ``requests`` one after another through a fresh gateway on the store at ``db``."""

    async def go() -> tuple[list[str], GatewayStats]:
        store = Store.open(db)
        writer = StoreWriter(store)
        try:
            gateway = Gateway({backend.name: backend}, writer, clock=clock or NoSleep())
            texts = [(await gateway.complete(req)).response.text for req in requests]
            return texts, gateway.stats
        finally:
            await backend.aclose()
            writer.close()
            store.close()

    return asyncio.run(go())


def calls(db: Path) -> list[tuple[str, str, int, dict[str, Any]]]:
    """(request_hash, status, attempt, request as stored) of every llm_calls row, in order."""
    store = Store.open(db)
    try:
        rows = store.sql("SELECT request_hash, status, attempt, request FROM llm_calls ORDER BY created_at")
    finally:
        store.close()
    return [(key, status, attempt, json.loads(sent)) for key, status, attempt, sent in rows]


# -- what goes over the wire -------------------------------------------------------------------------


def test_openai_sends_the_schema_as_strict_json_schema(fake: FakeAPI) -> None:
    [text] = complete(make("openai", fake), request("openai"))
    assert json.loads(text) == REPLY  # the responder's text, as is
    assert last_body(fake)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "critique", "schema": SCHEMA, "strict": True},
    }


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_no_response_format_sends_no_schema(fake: FakeAPI, provider: str) -> None:
    complete(make(provider, fake), request(provider, response_format=None))
    body = last_body(fake)
    assert not {"response_format", "tools", "tool_choice"} & body.keys()


def test_anthropic_forces_a_tool_call_and_replies_with_its_input(fake: FakeAPI) -> None:
    backend = make("anthropic", fake)

    async def go() -> tuple[str, str]:
        try:
            response = await backend.complete(request("anthropic"))
        finally:
            await backend.aclose()
        return response.text, response.finish_reason

    text, finish = asyncio.run(go())
    assert text == json.dumps(REPLY, sort_keys=True)  # canonical, whatever order the model chose
    assert finish == "stop"  # stop_reason "tool_use": the structured reply is complete
    body = last_body(fake)
    assert body["tools"] == [
        {"name": "critique", "description": "Reply in this structure.", "input_schema": SCHEMA}
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "critique"}


def test_anthropic_reply_without_the_tool_call_is_malformed(fake: FakeAPI) -> None:
    fake.configure(responder="structured_responders:prose")  # the fake then answers a text block
    with pytest.raises(BackendError, match="no critique tool call") as caught:
        complete(make("anthropic", fake), request("anthropic"))
    assert (caught.value.kind, caught.value.retryable) == ("malformed", True)


def test_a_refused_response_format_is_unsupported_not_retryable(fake: FakeAPI) -> None:
    fake.configure(refuse_response_format=True)
    with pytest.raises(BackendError) as caught:
        complete(make("openai", fake), request("openai"))
    error = caught.value
    assert (error.kind, error.status, error.retryable) == ("unsupported", 400, False)
    assert "response_format json_schema is not supported" in str(error)
    # The same server answers a request without a schema.
    assert complete(make("openai", fake), request("openai", response_format=None))


def test_llama_cpp_python_refusal_switches_to_its_json_object_shape(fake: FakeAPI) -> None:
    # llama-cpp-python 0.3.x answers json_schema with a 500 naming 'json_object', which it takes
    # with the schema beside it; a plain 500 is retried, so the retry goes out in that shape.
    fake.configure(refuse_json_schema=True)
    backend = make("openai", fake)

    async def go() -> tuple[BackendError, str]:
        try:
            with pytest.raises(BackendError) as caught:
                await backend.complete(request("openai"))
            return caught.value, (await backend.complete(request("openai"))).text
        finally:
            await backend.aclose()

    error, text = asyncio.run(go())
    assert (error.kind, error.status, error.retryable) == ("server", 500, True)
    assert json.loads(text) == REPLY
    assert last_body(fake)["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert fake.stats()["by_status"] == {"500": 1, "200": 1}


# -- the gateway's fallback ---------------------------------------------------------------------------


def test_gateway_falls_back_once_and_remembers_for_the_run(fake: FakeAPI, tmp_path: Path) -> None:
    fake.configure(refuse_response_format=True)
    db = tmp_path / "calls.duckdb"
    first, later = request("openai"), request("openai", text="Score another reply.")

    texts, stats = through_gateway(make("openai", fake), db, first, later, first)

    assert [json.loads(text) for text in texts] == [REPLY] * 3
    # One refused attempt for the first call, none for the later one, none for the repeat.
    assert fake.stats()["by_status"] == {"400": 1, "200": 2}
    assert stats.schema_fallbacks == {"openai:model-x"}
    assert (stats.failed_attempts, stats.retries, stats.cache_hits) == (1, 0, 1)
    assert stats.errors_by_kind == {"unsupported": 1}
    rows = calls(db)
    # Stored under the hash of the request as asked, showing the request as sent.
    assert [(key, status, attempt) for key, status, attempt, _ in rows] == [
        (first.hash, "error", 1),
        (first.hash, "ok", 2),
        (later.hash, "ok", 1),
    ]
    assert [sent["response_format"] for *_, sent in rows] == [
        {"name": "critique", "schema": CRITIQUE.schema},
        None,
        None,
    ]

    # A replay of the run is answered from the cache: the fake sees nothing new.
    fake.reset()
    replayed, replay_stats = through_gateway(make("openai", fake), db, first, later)
    assert replayed == texts[:2]
    assert fake.stats()["requests"] == 0
    assert replay_stats.cache_hits == 2


def test_gateway_keeps_the_schema_when_the_server_takes_another_shape(fake: FakeAPI, tmp_path: Path) -> None:
    fake.configure(refuse_json_schema=True)
    clock = NoSleep()
    texts, stats = through_gateway(
        make("openai", fake), tmp_path / "calls.duckdb", request("openai"), clock=clock
    )
    assert json.loads(texts[0]) == REPLY
    assert fake.stats()["by_status"] == {"500": 1, "200": 1}
    assert last_body(fake)["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert stats.schema_fallbacks == set()  # constrained decoding survived the refusal
    assert (stats.retries, len(clock.slept)) == (1, 1)


def test_requests_without_a_schema_never_fall_back(tmp_path: Path) -> None:
    class Refuses:
        name = "refuses"

        def __init__(self) -> None:
            self.sent: list[ModelRequest] = []

        async def complete(self, req: ModelRequest) -> Any:
            self.sent.append(req)
            raise BackendError("refuses: nothing works", kind="unsupported")

    async def go() -> tuple[Refuses, GatewayStats]:
        store = Store.open(tmp_path / "calls.duckdb")
        writer = StoreWriter(store)
        backend = Refuses()
        try:
            gateway = Gateway({"refuses": backend}, writer, retry=RetryPolicy(max_attempts=3))
            for req in (request("refuses", response_format=None), request("refuses")):
                with pytest.raises(BackendError, match="nothing works"):
                    await gateway.complete(req)
            return backend, gateway.stats
        finally:
            writer.close()
            store.close()

    backend, stats = asyncio.run(go())
    # Without a schema: one attempt. With one: the attempt, then one without it, then stop.
    assert [req.response_format for req in backend.sent] == [None, CRITIQUE, None]
    assert stats.schema_fallbacks == {"refuses:model-x"}


# -- the request hash ---------------------------------------------------------------------------------


def test_response_format_joins_the_hash_only_when_set() -> None:
    # The golden request of tests/test_limits.py: adding the field must not move its hash.
    golden = ModelRequest(
        backend="anthropic",
        model="claude-sonnet-4-5",
        role="assistant",
        system="You are terse.",
        messages=(
            Message("user", "Hi"),
            Message("assistant", "Hello."),
            Message("user", "Refund order 1042?"),
        ),
        params=GenerationParams(temperature=0.5, max_tokens=256),
        seed=42,
    )
    assert request_hash(golden) == (
        "dh1-sha256:0dc907a5fa5328f25b115f8fed85eeb950c2b81fec6fd17b9d48534b4776de15"
    )
    with_schema = ModelRequest(**{**_fields(golden), "response_format": CRITIQUE})
    other_schema = ModelRequest(
        **{**_fields(golden), "response_format": ResponseFormat.from_schema("critique", {"type": "object"})}
    )
    other_name = ModelRequest(
        **{**_fields(golden), "response_format": ResponseFormat.from_schema("verdict", SCHEMA)}
    )
    hashes = {request_hash(r) for r in (golden, with_schema, other_schema, other_name)}
    assert len(hashes) == 4
    # The schema's key order does not matter: it is stored canonically.
    reordered = dict(reversed(list(SCHEMA.items())))
    assert ResponseFormat.from_schema("critique", reordered) == CRITIQUE


def _fields(req: ModelRequest) -> dict[str, Any]:
    return {name: getattr(req, name) for name in ModelRequest.__dataclass_fields__}


# -- the sim and the prose critic ---------------------------------------------------------------------


def test_the_sim_ignores_response_format() -> None:
    backend = SimBackend()
    system = CRITIC_HEADER + "\nScore the reply."
    plain = request("sim", response_format=None, system=system)

    async def go() -> tuple[str, str]:
        with_schema = await backend.complete(request("sim", system=system))
        return with_schema.text, (await backend.complete(plain)).text

    with_schema, without = asyncio.run(go())
    assert with_schema == without


def test_prose_critic_answers_prose_only_as_the_critic() -> None:
    conversation = [("user", "Can I get a refund?")]
    critiques = {prose_critic_responder(CRITIC_HEADER + "\n...", conversation, seed) for seed in range(6)}
    assert len(critiques) > 1  # varied by seed
    for critique in critiques:
        assert "/10" in critique or "out of 10" in critique
        with pytest.raises(json.JSONDecodeError):
            json.loads(critique)
    other = "You are a helpful assistant."
    assert prose_critic_responder(other, conversation, 5) == respond_text(other, conversation, 5)


def test_prose_critic_ignores_response_format_at_the_fake(fake: FakeAPI) -> None:
    fake.configure(responder="dramaturg.testing._fake_api:prose_critic_responder")
    [text] = complete(make("openai", fake), request("openai", system=CRITIC_HEADER))
    assert text.startswith(("Score: ", "I'd give this"))
    assert "response_format" in last_body(fake)


# -- a real server ------------------------------------------------------------------------------------


@pytest.mark.live
def test_live_server_answers_a_critique_schema_in_json(monkeypatch: pytest.MonkeyPatch) -> None:
    base_url = os.environ.get("DRAMATURG_LIVE_BASE_URL")
    model = os.environ.get("DRAMATURG_LIVE_MODEL")
    if not (base_url and model):
        pytest.skip("set DRAMATURG_LIVE_BASE_URL and DRAMATURG_LIVE_MODEL to ask a real server")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local server needs no key
    live = request(
        "openai",
        model=model,
        system="You are a critic. Score the assistant's reply from 1 to 10 and say why, briefly.",
        text="Assistant's reply: Sure, I have refunded order 1042; expect it in 5 days.",
        params=GenerationParams(temperature=0.0, max_tokens=120),
    )

    async def go() -> str:
        backend = OpenAIBackend(base_url=base_url)
        try:
            try:
                return (await backend.complete(live)).text
            except BackendError as exc:
                if exc.kind != "server":
                    raise
                # llama-cpp-python refuses the json_schema shape once; the gateway would retry.
                return (await backend.complete(live)).text
        finally:
            await backend.aclose()

    reply = json.loads(asyncio.run(go()))
    assert isinstance(reply, dict)
    assert set(reply) == {"comment", "score"}
    assert isinstance(reply["score"], int)


def test_raw_newlines_inside_json_strings_parse() -> None:
    # Real llama.cpp output under a schema: a literal newline inside the feedback string.
    from dramaturg.evaluators import parse_critique

    text = '{"feedback": "Step 1:\n   subtract 12", "overall": 7, "scores": {"concise": 3}}'
    assert parse_critique(text, ["concise"]).feedback == "Step 1:\n   subtract 12"
