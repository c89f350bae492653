"""The local HTTP fake of the Anthropic and OpenAI APIs, driven through the real SDKs."""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from pydantic import ValidationError

import dramaturg.testing
from dramaturg.testing import FakeAPI, FakeAPIConfig
from dramaturg.testing._fake_api import canonical_body_hash, decide_fault

BASE = FakeAPIConfig(responder="echo", retry_after_s=0.01)
HELLO: list[Any] = [{"role": "user", "content": "hello there"}]

RESPONDERS = """
import json

def reveal(system, messages, seed):
    return json.dumps({"system": system, "messages": messages, "seed": seed})

def broken(system, messages, seed):
    raise RuntimeError("responder bug")
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeAPI]:
    responders = tmp_path_factory.mktemp("responders")
    (responders / "fake_responders.py").write_text(textwrap.dedent(RESPONDERS))
    with pytest.MonkeyPatch.context() as patch:
        # The server imports "module:function" responders, so it needs them on its path.
        existing = os.environ.get("PYTHONPATH")
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(responders), existing])))
        fake = FakeAPI.start(BASE)
    with fake:
        yield fake


@pytest.fixture
def fake(server: FakeAPI) -> FakeAPI:
    server.configure(**BASE.model_dump())
    server.reset()
    return server


def anthropic_client(fake: FakeAPI, key: str = "k", retries: int = 0) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=fake.anthropic_base_url, api_key=key, max_retries=retries)


def openai_client(fake: FakeAPI, key: str = "k") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key=key, max_retries=0)


async def ask_anthropic(fake: FakeAPI, key: str = "k", **params: Any) -> anthropic.types.Message:
    async with anthropic_client(fake, key) as client:
        request = {"model": "claude-test", "max_tokens": 64, "messages": HELLO, **params}
        message: anthropic.types.Message = await client.messages.create(**request)
        return message


async def ask_openai(fake: FakeAPI, key: str = "k", **params: Any) -> Any:
    async with openai_client(fake, key) as client:
        request = {"model": "gpt-test", "messages": HELLO, **params}
        return await client.chat.completions.create(**request)


def post(fake: FakeAPI, path: str, body: Any, key: str = "k") -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{fake.port}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "x-api-key": key},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_exports_and_config_defaults() -> None:
    assert dramaturg.testing.__all__ == ["FakeAPI", "FakeAPIConfig", "LocalRayCluster", "request_responder"]
    config = FakeAPIConfig()
    assert (config.rpm_limit, config.rate_window_s) == (None, 1.0)  # no rate limit unless asked
    assert config.responder == "dramaturg.backends._sim:respond_text"
    assert (config.latency_ms, config.seed, config.retry_after_s) == (0, 0, 1.0)
    assert config.reject_keys == []
    assert config.fail_all_status is None
    assert [rate for _, rate in config.fault_rates()] == [0.0] * 5
    with pytest.raises(ValidationError):
        FakeAPIConfig(rate_429=0.5, rate_drop=0.6)
    with pytest.raises(ValidationError):
        FakeAPIConfig(latency=5)  # type: ignore[call-arg]


def test_anthropic_sdk_gets_well_formed_reply(fake: FakeAPI) -> None:
    # anthropic 2.x has no `temperature` argument; the fake must still accept the field.
    message = asyncio.run(ask_anthropic(fake, extra_body={"temperature": 0.3}))

    assert message.id.startswith("msg_")
    assert message.model == "claude-test"
    assert message.role == "assistant"
    assert message.stop_reason == "end_turn"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "echo: hello there"  # type: ignore[union-attr]
    assert message.usage.input_tokens == len("hello there") // 4 + 1
    assert message.usage.output_tokens == len("echo: hello there") // 4 + 1
    assert message.usage.cache_read_input_tokens == 0
    stats = fake.stats()
    assert stats["requests"] == stats["answered_200"] == 1
    assert stats["by_status"] == {"200": 1}
    assert stats["first_request_at"] <= stats["last_response_at"]


def test_openai_sdk_gets_well_formed_reply(fake: FakeAPI) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "x" * 300}]},
    ]
    completion = asyncio.run(ask_openai(fake, messages=messages))

    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-test"
    choice = completion.choices[0]
    assert (choice.index, choice.finish_reason, choice.message.role) == (0, "stop", "assistant")
    assert choice.message.content == ("echo: " + "x" * 300)[:200]
    usage = completion.usage
    assert usage is not None
    assert usage.completion_tokens == 200 // 4 + 1
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert fake.stats()["answered_200"] == 1


def test_responder_sees_system_turns_and_seed(fake: FakeAPI) -> None:
    fake.configure(responder="fake_responders:reveal")
    system_blocks = [{"type": "text", "text": "rule one"}, {"type": "text", "text": "rule two"}]
    turns = [
        {"role": "user", "content": [{"type": "text", "text": "q1"}]},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    message = asyncio.run(ask_anthropic(fake, system=system_blocks, messages=turns))
    seen = json.loads(message.content[0].text)  # type: ignore[union-attr]
    assert seen["system"] == "rule one\nrule two"
    assert seen["messages"] == [["user", "q1"], ["assistant", "a1"], ["user", "q2"]]
    again = asyncio.run(ask_anthropic(fake, system=system_blocks, messages=turns))
    assert json.loads(again.content[0].text)["seed"] == seen["seed"]  # type: ignore[union-attr]

    completion = asyncio.run(
        ask_openai(fake, seed=1234, messages=[{"role": "developer", "content": "dev"}, *HELLO])
    )
    seen = json.loads(completion.choices[0].message.content)
    assert seen == {"system": "dev", "messages": [["user", "hello there"]], "seed": 1234}


def test_responder_failure_is_a_500_naming_the_responder(fake: FakeAPI) -> None:
    fake.configure(responder="fake_responders:broken")
    status, body = post(fake, "/v1/messages", {"model": "m", "max_tokens": 5, "messages": HELLO})
    assert status == 500
    assert "fake_responders:broken" in body["error"]["message"]

    fake.configure(responder="no_such_module_here:fn")
    status, body = post(fake, "/v1/messages", {"model": "m", "max_tokens": 5, "messages": HELLO})
    assert status == 500
    assert "no_such_module_here" in body["error"]["message"]


def test_429_carries_retry_after_headers(fake: FakeAPI) -> None:
    fake.configure(rate_429=1.0, retry_after_s=2.5)

    with pytest.raises(anthropic.RateLimitError) as anthropic_exc:
        asyncio.run(ask_anthropic(fake))
    with pytest.raises(openai.RateLimitError) as openai_exc:
        asyncio.run(ask_openai(fake))

    for exc in (anthropic_exc.value, openai_exc.value):
        assert exc.status_code == 429
        assert exc.response.headers["retry-after"] == "2.5"
        assert exc.response.headers["retry-after-ms"] == "2500"
    assert anthropic_exc.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "rate limited (injected)"},
    }
    assert fake.stats()["by_status"] == {"429": 2}


def test_overloaded_is_529_on_anthropic_and_503_on_openai(fake: FakeAPI) -> None:
    fake.configure(rate_529=1.0)

    with pytest.raises(anthropic.OverloadedError) as anthropic_exc:
        asyncio.run(ask_anthropic(fake))
    with pytest.raises(openai.InternalServerError) as openai_exc:
        asyncio.run(ask_openai(fake))

    assert anthropic_exc.value.status_code == 529
    assert openai_exc.value.status_code == 503
    assert fake.stats()["by_status"] == {"529": 1, "503": 1}


def test_dropped_connection_is_a_connection_error(fake: FakeAPI) -> None:
    fake.configure(rate_drop=1.0)

    with pytest.raises(anthropic.APIConnectionError) as anthropic_exc:
        asyncio.run(ask_anthropic(fake))
    with pytest.raises(openai.APIConnectionError) as openai_exc:
        asyncio.run(ask_openai(fake))

    # A cut connection must not look like a timeout: clients may treat the two differently.
    assert not isinstance(anthropic_exc.value, anthropic.APITimeoutError)
    assert not isinstance(openai_exc.value, openai.APITimeoutError)
    assert isinstance(anthropic_exc.value.__cause__, httpx2.RemoteProtocolError)
    assert "expected" in str(anthropic_exc.value.__cause__)
    stats = fake.stats()
    assert stats["by_status"] == {"drop": 2}
    assert stats["answered_200"] == 0


def test_malformed_body_raises_json_decode_error(fake: FakeAPI) -> None:
    fake.configure(rate_malformed=1.0)

    # Neither SDK wraps this in its own error type, and neither retries it.
    with pytest.raises(json.JSONDecodeError):
        asyncio.run(ask_anthropic(fake))
    with pytest.raises(json.JSONDecodeError):
        asyncio.run(ask_openai(fake))

    stats = fake.stats()
    assert stats["by_status"] == {"malformed": 2}
    assert stats["answered_200"] == 0


def test_rejected_key_is_401_with_provider_error_shape(fake: FakeAPI) -> None:
    fake.configure(reject_keys=["revoked"])

    with pytest.raises(anthropic.AuthenticationError) as anthropic_exc:
        asyncio.run(ask_anthropic(fake, key="revoked"))
    with pytest.raises(openai.AuthenticationError) as openai_exc:
        asyncio.run(ask_openai(fake, key="revoked"))

    assert anthropic_exc.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
    assert openai_exc.value.code == "invalid_api_key"
    assert asyncio.run(ask_anthropic(fake, key="fine")).content
    assert fake.stats()["by_status"] == {"401": 2, "200": 1}


def test_fail_all_status_answers_every_request(fake: FakeAPI) -> None:
    fake.configure(fail_all_status=400)

    with pytest.raises(anthropic.BadRequestError):
        asyncio.run(ask_anthropic(fake))
    with pytest.raises(openai.BadRequestError) as openai_exc:
        asyncio.run(ask_openai(fake))

    assert openai_exc.value.body == {
        "message": "fail_all_status=400",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([{"role": "assistant", "content": "hi"}], 'first message must use the "user" role'),
        (
            [*HELLO, {"role": "user", "content": "again"}],
            'found multiple "user" roles in a row',
        ),
        (
            [*HELLO, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}],
            'found multiple "assistant" roles in a row',
        ),
    ],
)
def test_anthropic_role_order_is_validated(fake: FakeAPI, messages: list[Any], fragment: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as exc:
        asyncio.run(ask_anthropic(fake, messages=messages))

    assert exc.value.status_code == 400
    error = exc.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"]


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/v1/messages", {"max_tokens": 5, "messages": HELLO}, "model: Field required"),
        ("/v1/messages", {"model": "m", "messages": HELLO}, "max_tokens: Field required"),
        ("/v1/messages", {"model": "m", "max_tokens": 5}, "messages: Field required"),
        ("/v1/messages?beta=true", {"model": "m", "messages": HELLO}, "max_tokens: Field required"),
        ("/v1/chat/completions", {"messages": HELLO}, "model parameter"),
        ("/v1/chat/completions", {"model": "m"}, "'messages'"),
    ],
)
def test_missing_required_fields_are_400(
    fake: FakeAPI, path: str, body: dict[str, Any], fragment: str
) -> None:
    status, error = post(fake, path, body)

    assert status == 400
    message = error["error"]["message"]
    assert fragment in message
    if path.startswith("/v1/messages"):
        assert error["type"] == "error"


def test_repeats_count_resent_answers_but_not_retries_of_failures(fake: FakeAPI) -> None:
    fake.configure(rate_500=1.0)
    with pytest.raises(anthropic.InternalServerError):
        asyncio.run(ask_anthropic(fake))
    fake.configure(rate_500=0.0)
    asyncio.run(ask_anthropic(fake))
    assert fake.stats()["repeats_after_200"] == 0

    asyncio.run(ask_anthropic(fake))
    asyncio.run(ask_openai(fake))

    stats = fake.stats()
    assert stats["repeats_after_200"] == 1
    assert stats["requests"] == 4
    assert stats["distinct_bodies"] == 2
    assert stats["answered_200"] == 3


def test_fault_decision_is_deterministic_per_attempt(fake: FakeAPI) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "retry"}]}
    config = BASE.model_copy(update={"rate_500": 0.5})
    body_hash = canonical_body_hash(body)
    seed = next(
        seed
        for seed in range(1000)
        if decide_fault(config.model_copy(update={"seed": seed}), body_hash, 0) == "500"
        and decide_fault(config.model_copy(update={"seed": seed}), body_hash, 1) is None
    )
    fake.configure(rate_500=0.5, seed=seed)

    assert post(fake, "/v1/messages", body)[0] == 500
    assert post(fake, "/v1/messages", body)[0] == 200
    assert fake.stats()["repeats_after_200"] == 0
    post(fake, "/v1/messages", body)

    stats = fake.stats()
    assert stats["repeats_after_200"] == 1
    assert stats["distinct_bodies"] == 1


def test_sdk_retry_honours_retry_after_and_recovers(fake: FakeAPI) -> None:
    messages = [{"role": "user", "content": "please retry me"}]
    # The SDK sends exactly these parameters, so the fake's attempts can be predicted.
    body_hash = canonical_body_hash({"max_tokens": 64, "messages": messages, "model": "claude-test"})
    config = BASE.model_copy(update={"rate_429": 0.5})
    seed = next(
        seed
        for seed in range(1000)
        if [decide_fault(config.model_copy(update={"seed": seed}), body_hash, n) for n in (0, 1)]
        == ["429", None]
    )
    fake.configure(rate_429=0.5, seed=seed)

    async def call() -> anthropic.types.Message:
        async with anthropic_client(fake, retries=2) as client:
            return await client.messages.create(
                model="claude-test",
                max_tokens=64,
                messages=messages,  # type: ignore[arg-type]
            )

    assert asyncio.run(call()).content
    stats = fake.stats()
    assert stats["by_status"] == {"429": 1, "200": 1}
    assert stats["repeats_after_200"] == 0


def test_serves_forty_concurrent_slow_requests_in_parallel(fake: FakeAPI) -> None:
    fake.configure(latency_ms=200)

    async def burst() -> float:
        async with anthropic_client(fake) as client:
            started = time.perf_counter()
            await asyncio.gather(
                *(
                    client.messages.create(
                        model="m",
                        max_tokens=8,
                        messages=[{"role": "user", "content": f"request {n}"}],
                    )
                    for n in range(40)
                )
            )
            return time.perf_counter() - started

    elapsed = asyncio.run(burst())

    stats = fake.stats()
    assert stats["answered_200"] == 40
    assert stats["max_in_flight"] == 40
    assert stats["in_flight"] == 0
    # Serially this takes 8 s; the bound leaves room for a loaded CI machine.
    assert elapsed < 2.0


def test_reset_zeroes_counters_and_forgets_bodies(fake: FakeAPI) -> None:
    asyncio.run(ask_anthropic(fake))
    fake.reset()
    asyncio.run(ask_anthropic(fake))

    stats = fake.stats()
    assert stats["requests"] == 1
    assert stats["repeats_after_200"] == 0
    assert stats["by_status"] == {"200": 1}


def test_configure_validates_before_sending(fake: FakeAPI) -> None:
    with pytest.raises(ValidationError):
        fake.configure(rate_500=2.0)
    with pytest.raises(ValidationError):
        fake.configure(no_such_field=1)

    assert fake.configure(latency_ms=5).latency_ms == 5
    assert fake.config.latency_ms == 5


def test_stop_kills_the_server_process() -> None:
    fake = FakeAPI.start(FakeAPIConfig(responder="echo"))
    pid = fake.pid
    os.kill(pid, 0)
    assert fake.stats()["requests"] == 0

    fake.stop()
    fake.stop()

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{fake.openai_base_url}/chat/completions", timeout=2)


def test_default_responder_answers_even_before_sim_exists() -> None:
    with FakeAPI.start() as fake:
        status, body = post(fake, "/v1/chat/completions", {"model": "m", "messages": HELLO})
    assert status == 200
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["choices"][0]["message"]["content"]


def test_the_rate_limit_is_a_sliding_window_with_the_providers_headers(fake: FakeAPI) -> None:
    # 2 requests in any 10 s: a window wide enough that a loaded machine cannot outlast it.
    fake.configure(rpm_limit=12, rate_window_s=10.0)

    def ask(route: str, body: dict[str, Any]) -> tuple[int, dict[str, str]]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{fake.port}{route}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "x-api-key": "k", "Authorization": "Bearer k"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers)

    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    first, second, refused = (ask("/v1/chat/completions", chat) for _ in range(3))
    assert (first[0], second[0], refused[0]) == (200, 200, 429)
    assert first[1]["x-ratelimit-limit-requests"] == "12"
    assert (first[1]["x-ratelimit-remaining-requests"], second[1]["x-ratelimit-remaining-requests"]) == (
        "1",
        "0",
    )
    wait_ms = int(refused[1]["retry-after-ms"])
    assert 0 < wait_ms <= 10_000 and refused[1]["x-ratelimit-reset-requests"] == f"{wait_ms}ms"
    messages = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    status, headers = ask("/v1/messages", messages)
    assert status == 429 and headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    # Each model has a window of its own, as on the real APIs.
    other, _ = ask("/v1/chat/completions", {**chat, "model": "another-model"})
    assert other == 200
    stats = fake.stats()
    # Refused requests were not counted against the window.
    assert (stats["requests"], stats["rate_limited"], stats["by_status"]) == (5, 2, {"200": 3, "429": 2})
