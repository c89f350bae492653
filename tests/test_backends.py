"""The anthropic and openai backends, through the real SDKs, against the local fake API."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dramaturg.memory import StoreWriter

from dramaturg import BackendError, ConfigError, GenerationParams, Message, ModelRequest, ModelResponse, Store
from dramaturg._gateway import Gateway
from dramaturg.backends import BACKEND_FACTORIES, AnthropicBackend, OpenAIBackend
from dramaturg.backends._anthropic import anthropic_messages
from dramaturg.testing import FakeAPI, FakeAPIConfig
from dramaturg.testing._fake_api import canonical_body_hash, decide_fault
from tests.conftest import fake_api_with_responders, point_sdks_at

BASE = FakeAPIConfig(responder="echo", retry_after_s=0.01)
Backend = AnthropicBackend | OpenAIBackend

RESPONDERS = """
import json

def reveal(system, messages, seed):
    return json.dumps({"system": system, "messages": messages, "seed": seed})
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeAPI]:
    with fake_api_with_responders(
        BASE, tmp_path_factory.mktemp("responders"), "backend_responders", RESPONDERS
    ) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> FakeAPI:
    return point_sdks_at(server, BASE, monkeypatch)


def make(provider: str, fake: FakeAPI, **options: Any) -> Backend:
    if provider == "anthropic":
        return AnthropicBackend(**options)
    return OpenAIBackend(base_url=fake.openai_base_url, **options)


def request(provider: str, text: str = "hello there", **changes: Any) -> ModelRequest:
    fields: dict[str, Any] = {
        "backend": provider,
        "model": "model-x",
        "role": "assistant",
        "system": "Be brief.",
        "messages": (Message("user", text),),
        "params": GenerationParams(temperature=0.3, max_tokens=64),
        "seed": 11,
        **changes,
    }
    return ModelRequest(**fields)


def complete(backend: Backend, req: ModelRequest) -> ModelResponse:
    async def go() -> ModelResponse:
        try:
            return await backend.complete(req)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def failure(backend: Backend, req: ModelRequest) -> BackendError:
    with pytest.raises(BackendError) as caught:
        complete(backend, req)
    return caught.value


PROVIDERS = ["anthropic", "openai"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_reply_text_and_usage(fake: FakeAPI, provider: str) -> None:
    response = complete(make(provider, fake), request(provider))
    assert response.text == "echo: hello there"
    assert response.input_tokens == len("Be brief.hello there") // 4 + 1
    assert response.output_tokens == len("echo: hello there") // 4 + 1
    assert (response.finish_reason, response.cache_read_tokens, response.cache_write_tokens) == ("stop", 0, 0)
    assert fake.stats()["by_status"] == {"200": 1}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_system_messages_and_seed_reach_the_api(fake: FakeAPI, provider: str) -> None:
    fake.configure(responder="backend_responders:reveal")
    conversation = (Message("user", "q1"), Message("assistant", "a1"), Message("user", "q2"))
    seen = json.loads(complete(make(provider, fake), request(provider, messages=conversation)).text)
    assert seen["system"] == "Be brief."
    assert seen["messages"] == [["user", "q1"], ["assistant", "a1"], ["user", "q2"]]
    if provider == "openai":
        assert seen["seed"] == 11  # Anthropic's API has no seed parameter


def test_anthropic_guard_makes_any_conversation_valid(fake: FakeAPI) -> None:
    fake.configure(responder="backend_responders:reveal")
    odd = (Message("assistant", "I spoke first"), Message("assistant", "twice"), Message("user", " "))
    seen = json.loads(complete(make("anthropic", fake), request("anthropic", messages=odd)).text)
    assert seen["messages"] == [
        ["user", "(The conversation begins.)"],
        ["assistant", "I spoke first\n\ntwice"],
        ["user", "(empty message)"],
    ]
    assert anthropic_messages((Message("user", "a"), Message("user", "b"))) == [
        {"role": "user", "content": "a\n\nb"}
    ]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("fault", "kind", "status"),
    [
        ({"rate_500": 1.0}, "server", 500),
        ({"rate_529": 1.0}, "overloaded", None),  # 529 on Anthropic, 503 on OpenAI
        ({"rate_drop": 1.0}, "connection", None),
        ({"rate_malformed": 1.0}, "malformed", None),
        ({"fail_all_status": 400}, "bad_request", 400),
        ({"fail_all_status": 404}, "bad_request", 404),
        ({"fail_all_status": 403}, "auth", 403),
        ({"reject_keys": ["test-anthropic-key", "test-openai-key"]}, "auth", 401),
    ],
)
def test_failures_map_to_error_kinds(
    fake: FakeAPI, provider: str, fault: dict[str, Any], kind: str, status: int | None
) -> None:
    fake.configure(**fault)
    error = failure(make(provider, fake), request(provider))
    assert error.kind == kind
    if status is not None:
        assert error.status == status
    assert error.retryable == (kind in {"server", "overloaded", "connection", "malformed"})
    assert str(error).startswith(f"{provider}: ")
    assert "test-anthropic-key" not in str(error)
    assert "test-openai-key" not in str(error)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_carries_the_retry_after_the_server_sent(fake: FakeAPI, provider: str) -> None:
    fake.configure(rate_429=1.0, retry_after_s=2.5)
    error = failure(make(provider, fake), request(provider))
    assert (error.kind, error.status, error.retry_after) == ("rate_limit", 429, 2.5)


def test_401_names_the_key_to_fix(fake: FakeAPI) -> None:
    fake.configure(reject_keys=["test-anthropic-key"])
    error = failure(make("anthropic", fake), request("anthropic"))
    assert str(error) == (
        "anthropic: HTTP 401 authentication_error: invalid x-api-key (check ANTHROPIC_API_KEY)"
    )


@pytest.mark.parametrize("provider", PROVIDERS)
def test_sdk_timeout_is_a_timeout(fake: FakeAPI, provider: str) -> None:
    fake.configure(latency_ms=2000)
    assert failure(make(provider, fake, timeout_s=0.2), request(provider)).kind == "timeout"


def test_refused_connection_is_a_connection_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    error = failure(AnthropicBackend(), request("anthropic"))
    assert error.kind == "connection"
    assert "ConnectError" in str(error)


def test_missing_keys_are_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY is not set"):
        BACKEND_FACTORIES["anthropic"]()
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        BACKEND_FACTORIES["openai"]()
    # A local OpenAI-compatible server needs no key.
    local = BACKEND_FACTORIES["openai"](base_url="http://127.0.0.1:9/v1")
    asyncio.run(local.aclose())  # type: ignore[attr-defined]


def test_gateway_retry_honours_retry_after_through_the_sdk(fake: FakeAPI, tmp_path: Path) -> None:
    req = request("anthropic", text="please retry me")
    # The body the backend sends, so the fake's per-attempt faults can be predicted.
    body = {
        "model": "model-x",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "please retry me"}],
        "system": "Be brief.",
        "temperature": 0.3,
    }
    config = BASE.model_copy(update={"rate_429": 0.5, "retry_after_s": 3.0})
    seed = next(
        seed
        for seed in range(1000)
        if [
            decide_fault(config.model_copy(update={"seed": seed}), canonical_body_hash(body), n)
            for n in (0, 1)
        ]
        == ["429", None]
    )
    fake.configure(rate_429=0.5, retry_after_s=3.0, seed=seed)
    slept: list[float] = []

    class RecordingClock:
        def now(self) -> float:
            return 0.0

        async def sleep(self, seconds: float) -> None:
            slept.append(seconds)

    async def go() -> str:
        backend = AnthropicBackend()
        store = Store.open(tmp_path / "x.duckdb")
        writer = StoreWriter(store)
        try:
            gateway = Gateway({"anthropic": backend}, writer, clock=RecordingClock())
            return (await gateway.complete(req)).response.text
        finally:
            await backend.aclose()
            writer.close()
            store.close()

    assert asyncio.run(go()) == "echo: please retry me"
    assert slept == [3.0]
    stats = fake.stats()
    assert stats["by_status"] == {"429": 1, "200": 1}
    assert stats["repeats_after_200"] == 0


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_the_gateway_learns_the_servers_limit_and_keeps_to_its_window(
    provider: str, fake: FakeAPI, tmp_path: Path
) -> None:
    # The server allows each model 1200 rpm as a 1 s sliding window (20 in any second); the
    # gateway is given no limit at all. 80 distinct calls to two models, up to 16 at once.
    fake.configure(rpm_limit=1200, rate_window_s=1.0, latency_ms=20)
    models = ["model-x", "model-y"]

    async def go() -> Gateway:
        backend = make(provider, fake)
        store = Store.open(tmp_path / "x.duckdb")
        writer = StoreWriter(store)
        gateway = Gateway({provider: backend}, writer, concurrency=16)
        calls = [request(provider, f"call {i}", model=models[i % 2]) for i in range(80)]
        try:
            await asyncio.gather(*(gateway.complete(call) for call in calls))
        finally:
            await backend.aclose()
            writer.close()
            store.close()
        return gateway

    gateway = asyncio.run(go())
    stats = fake.stats()
    assert stats["answered_200"] == 80  # nothing lost
    # Each model learned its own limit and kept to it: 40 calls each, 20 a second apiece.
    assert [gateway.limiters.for_model(provider, model).rpm for model in models] == [1200, 1200]
    assert sorted(gateway.stats.learned_limits) == [
        f"1200 requests per minute for {provider}:{model}" for model in models
    ]
    # Unpaced, 16 callers at 20 ms a call would meet hundreds of 429s. Paced at the learned
    # limits, the 429s left come from timing jitter (a few on a quiet machine; a busy one
    # delays some requests more than others on their way) and each was retried.
    assert (
        stats["by_status"].get("429", 0)
        == stats["rate_limited"]
        == gateway.stats.errors_by_kind["rate_limit"]
    )
    assert stats["rate_limited"] <= 20, stats["by_status"]
