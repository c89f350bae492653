"""Tool calling on the anthropic and openai backends, through the real SDKs, against the local fake API.

The request bodies are pinned in the providers' documented shapes:

- OpenAI Chat Completions (function calling guide; the SDK's ``ChatCompletionFunctionToolParam``,
  ``ChatCompletionAssistantMessageParam`` and ``ChatCompletionToolMessageParam``): tools are
  ``{"type": "function", "function": {name, description, parameters}}``; an assistant turn
  that called tools carries ``tool_calls`` of ``{id, type: "function", function: {name,
  arguments: JSON text}}`` with ``content`` null when it said nothing; each result is
  ``{"role": "tool", "tool_call_id", "content"}``.
- Anthropic Messages (platform.claude.com "Handle tool calls"; the SDK's ``ToolUseBlockParam``,
  ``ToolResultBlockParam`` and ``ToolChoiceNoneParam``): tools are ``{name, description,
  input_schema}``; calls are assistant ``tool_use`` blocks ``{id, name, input: object}``; the
  results are ``tool_result`` blocks ``{tool_use_id, content}`` of the next user message,
  before any text; ``tool_choice`` is ``{"type": "auto"}`` or ``{"type": "none"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dramaturg.memory import StoreWriter
from dramaturg.scenarios import FunctionTool

from dramaturg import BackendError, GenerationParams, Message, ModelRequest, ModelResponse, Store
from dramaturg._gateway import Gateway
from dramaturg._model import ResponseFormat, ToolCall, ToolSpec
from dramaturg._toolbox import ToolBox
from dramaturg.backends import AnthropicBackend, OpenAIBackend, SimBackend
from dramaturg.backends._anthropic import anthropic_messages, tool_use_input
from dramaturg.testing import FakeAPI, FakeAPIConfig
from tests.conftest import fake_api_with_responders, point_sdks_at

BASE = FakeAPIConfig(responder="tool_responders:look_up", retry_after_s=0.01)
Backend = AnthropicBackend | OpenAIBackend
PROVIDERS = ["anthropic", "openai"]

RESPONDERS = """
import json

from dramaturg._model import ModelResponse, ToolCall
from dramaturg.testing import request_responder


@request_responder
def look_up(request):
    # A user's question gets one lookup; once results are in (or tools are off), a text answer.
    if request.messages[-1].role == "user" and request.tools and request.tool_choice == "auto":
        call = ToolCall("call_lookup_1", request.tools[0].name, json.dumps({"order_id": "A-1001"}))
        return ModelResponse("", 1, 1, finish_reason="tool_calls", tool_calls=(call,))
    results = [m.content for m in request.messages if m.role == "tool"]
    return ModelResponse(f"Found {' | '.join(results)} (tool_choice {request.tool_choice})", 1, 1)


@request_responder
def talk_and_call_twice(request):
    calls = (
        ToolCall("call_a", "lookup_order", json.dumps({"order_id": "A-1"})),
        ToolCall("call_b", "lookup_order", json.dumps({"order_id": "B-2"})),
    )
    return ModelResponse("Let me check both.", 1, 1, finish_reason="tool_calls", tool_calls=calls)


@request_responder
def call_regardless(request):
    call = ToolCall("call_x", "lookup_order", "{}")
    return ModelResponse("", 1, 1, finish_reason="tool_calls", tool_calls=(call,))
"""

LOOKUP = ToolSpec.from_schema(
    "lookup_order",
    "Look up an order.",
    {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
)
SCHEMA = {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}
QUESTION = Message("user", "Where is order A-1001?")
CALL = ToolCall("call_lookup_1", "lookup_order", json.dumps({"order_id": "A-1001"}))
RESULT = '{"status": "shipped"}'
AFTER_LOOKUP = (
    QUESTION,
    Message("assistant", "", tool_calls=(CALL,)),
    Message("tool", RESULT, tool_call_id=CALL.id),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeAPI]:
    with fake_api_with_responders(
        BASE, tmp_path_factory.mktemp("responders"), "tool_responders", RESPONDERS
    ) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> FakeAPI:
    return point_sdks_at(server, BASE, monkeypatch)


def make(provider: str, fake: FakeAPI) -> Backend:
    return AnthropicBackend() if provider == "anthropic" else OpenAIBackend(base_url=fake.openai_base_url)


def request(provider: str, messages: tuple[Message, ...] = (QUESTION,), **changes: Any) -> ModelRequest:
    fields: dict[str, Any] = {
        "backend": provider,
        "model": "model-x",
        "role": "assistant",
        "system": "Be brief.",
        "messages": messages,
        "params": GenerationParams(temperature=0.3, max_tokens=64),
        "seed": 11,
        "tools": (LOOKUP,),
        **changes,
    }
    return ModelRequest(**fields)


def complete(backend: Backend, *requests: ModelRequest) -> list[ModelResponse]:
    async def go() -> list[ModelResponse]:
        try:
            return [await backend.complete(req) for req in requests]
        finally:
            await backend.aclose()

    return asyncio.run(go())


def failure(backend: Backend, req: ModelRequest) -> BackendError:
    with pytest.raises(BackendError) as caught:
        complete(backend, req)
    return caught.value


def bodies(fake: FakeAPI) -> list[dict[str, Any]]:
    return list(fake.stats()["last_bodies"])


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_tool_call_and_its_result_round_trip(fake: FakeAPI, provider: str) -> None:
    asked, answered = complete(
        make(provider, fake),
        request(provider),
        request(provider, AFTER_LOOKUP, tool_choice="none"),
    )
    assert asked.tool_calls == (CALL,)
    assert (asked.text, asked.finish_reason) == ("", "tool_calls")
    assert answered.tool_calls == ()
    assert answered.text == f"Found {RESULT} (tool_choice none)"
    assert answered.finish_reason == "stop"
    assert fake.stats()["by_status"] == {"200": 2}


def test_openai_request_bodies_have_the_documented_shape(fake: FakeAPI) -> None:
    complete(make("openai", fake), request("openai"), request("openai", AFTER_LOOKUP, tool_choice="none"))
    first, second = bodies(fake)
    tools = [
        {
            "type": "function",
            "function": {"name": "lookup_order", "description": "Look up an order.", "parameters": SCHEMA},
        }
    ]
    common = {"model": "model-x", "temperature": 0.3, "seed": 11, "max_tokens": 64, "tools": tools}
    system = {"role": "system", "content": "Be brief."}
    question = {"role": "user", "content": "Where is order A-1001?"}
    assert first == {**common, "tool_choice": "auto", "messages": [system, question]}
    assert second == {
        **common,
        "tool_choice": "none",
        "messages": [
            system,
            question,
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_lookup_1",
                        "type": "function",
                        "function": {"name": "lookup_order", "arguments": '{"order_id": "A-1001"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_lookup_1", "content": RESULT},
        ],
    }


def test_anthropic_request_bodies_have_the_documented_shape(fake: FakeAPI) -> None:
    complete(
        make("anthropic", fake),
        request("anthropic"),
        request("anthropic", AFTER_LOOKUP, tool_choice="none"),
    )
    first, second = bodies(fake)
    common = {
        "model": "model-x",
        "max_tokens": 64,
        "system": "Be brief.",
        "temperature": 0.3,
        "tools": [{"name": "lookup_order", "description": "Look up an order.", "input_schema": SCHEMA}],
    }
    question = {"role": "user", "content": "Where is order A-1001?"}
    assert first == {**common, "tool_choice": {"type": "auto"}, "messages": [question]}
    assert second == {
        **common,
        "tool_choice": {"type": "none"},
        "messages": [
            question,
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "call_lookup_1",
                        "name": "lookup_order",
                        "input": {"order_id": "A-1001"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "call_lookup_1", "content": RESULT}],
            },
        ],
    }


@pytest.mark.parametrize("provider", PROVIDERS)
def test_text_with_parallel_calls_and_a_later_turn_round_trip(fake: FakeAPI, provider: str) -> None:
    fake.configure(responder="tool_responders:talk_and_call_twice")
    (asked,) = complete(make(provider, fake), request(provider))
    assert asked.text == "Let me check both."
    assert [call.id for call in asked.tool_calls] == ["call_a", "call_b"]
    assert json.loads(asked.tool_calls[1].arguments) == {"order_id": "B-2"}
    # The history of a later turn: text and two calls, two results, an answer, a new question.
    fake.configure(responder="tool_responders:look_up")
    later = (
        QUESTION,
        Message("assistant", asked.text, tool_calls=asked.tool_calls),
        Message("tool", '{"status": "shipped"}', tool_call_id="call_a"),
        Message("tool", "Error: no such order", tool_call_id="call_b"),
        Message("assistant", "A-1 has shipped; B-2 does not exist."),
        Message("user", "Thanks. And A-1001?"),
    )
    (again,) = complete(make(provider, fake), request(provider, later))
    assert again.tool_calls == (CALL,)
    sent = bodies(fake)[-1]["messages"]
    if provider == "anthropic":
        assert sent[1]["content"][0] == {"type": "text", "text": "Let me check both."}
        assert [block["type"] for block in sent[1]["content"]] == ["text", "tool_use", "tool_use"]
        assert [block["tool_use_id"] for block in sent[2]["content"]] == ["call_a", "call_b"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user", "assistant", "user"]
    else:
        assert sent[2]["content"] == "Let me check both."
        assert [m["role"] for m in sent] == [
            "system",
            "user",
            "assistant",
            "tool",
            "tool",
            "assistant",
            "user",
        ]


def test_anthropic_results_and_the_next_user_words_share_one_message() -> None:
    # Anthropic requires alternation: results, then what the user says next, in one user turn.
    history = (*AFTER_LOOKUP, Message("user", "Also, can I return it?"))
    assert anthropic_messages(history)[2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_lookup_1", "content": RESULT},
            {"type": "text", "text": "Also, can I return it?"},
        ],
    }


def test_an_error_result_reaches_anthropic_as_is_error(fake: FakeAPI) -> None:
    # The Messages API's `is_error` tells the model the call failed; OpenAI has no such field.
    error = Message("tool", "error: unknown tool 'refund_all'", tool_call_id=CALL.id, is_error=True)
    history = (QUESTION, Message("assistant", "", tool_calls=(CALL,)), error)
    assert anthropic_messages(history)[2]["content"] == [
        {"type": "tool_result", "tool_use_id": CALL.id, "content": error.content, "is_error": True}
    ]
    complete(make("anthropic", fake), request("anthropic", history, tool_choice="none"))
    (block,) = bodies(fake)[-1]["messages"][2]["content"]
    assert block["is_error"] is True
    # The error flag is part of what the model is told, so it is part of the request's hash.
    unflagged = (*history[:2], Message("tool", error.content, tool_call_id=CALL.id))
    assert request("anthropic", history).hash != request("anthropic", unflagged).hash


def test_tool_use_input_keeps_what_the_model_wrote() -> None:
    assert tool_use_input('{"b": 1, "a": [2]}') == {"b": 1, "a": [2]}
    assert tool_use_input("") == {}
    assert tool_use_input("{'order_id': A-1") == {"INVALID_JSON": "{'order_id': A-1"}
    assert tool_use_input("[1, 2]") == {"INVALID_JSON": "[1, 2]"}


def test_anthropic_refuses_tools_with_a_response_format(fake: FakeAPI) -> None:
    fmt = ResponseFormat.from_schema("critique", {"type": "object"})
    error = failure(make("anthropic", fake), request("anthropic", response_format=fmt))
    assert error.kind == "bad_request"
    assert fake.stats()["requests"] == 0


# --------------------------------------------------------------------------- nothing else changed

# Bodies recorded before tools existed (commit 11a27a3), for requests without tools.
UNCHANGED = {
    "anthropic": [
        {
            "max_tokens": 64,
            "messages": [{"content": "hi", "role": "user"}],
            "model": "model-x",
            "system": "Be brief.",
            "temperature": 0.3,
        },
        {
            "max_tokens": 64,
            "messages": [
                {"content": "(The conversation begins.)", "role": "user"},
                {"content": "a\n\nb", "role": "assistant"},
                {"content": "(empty message)", "role": "user"},
                {"content": "x", "role": "assistant"},
                {"content": "q", "role": "user"},
            ],
            "model": "model-x",
            "system": "Be brief.",
            "temperature": 0.3,
        },
        {
            "max_tokens": 64,
            "messages": [{"content": "hi", "role": "user"}],
            "model": "model-x",
            "system": "Be brief.",
            "temperature": 0.3,
            "tool_choice": {"name": "critique", "type": "tool"},
            "tools": [
                {
                    "description": "Reply in this structure.",
                    "input_schema": {"properties": {"a": {"type": "string"}}, "type": "object"},
                    "name": "critique",
                }
            ],
        },
    ],
    "openai": [
        {
            "max_tokens": 64,
            "messages": [{"content": "Be brief.", "role": "system"}, {"content": "hi", "role": "user"}],
            "model": "model-x",
            "seed": 11,
            "temperature": 0.3,
        },
        {
            "max_tokens": 64,
            "messages": [
                {"content": "Be brief.", "role": "system"},
                {"content": "a", "role": "assistant"},
                {"content": "b", "role": "assistant"},
                {"content": " ", "role": "user"},
                {"content": "x", "role": "assistant"},
                {"content": "q", "role": "user"},
            ],
            "model": "model-x",
            "seed": 11,
            "temperature": 0.3,
        },
        {
            "max_tokens": 64,
            "messages": [{"content": "Be brief.", "role": "system"}, {"content": "hi", "role": "user"}],
            "model": "model-x",
            "response_format": {
                "json_schema": {
                    "name": "critique",
                    "schema": {"properties": {"a": {"type": "string"}}, "type": "object"},
                    "strict": True,
                },
                "type": "json_schema",
            },
            "seed": 11,
            "temperature": 0.3,
        },
    ],
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_requests_without_tools_are_unchanged(fake: FakeAPI, provider: str) -> None:
    fake.configure(responder="echo")
    odd = (
        Message("assistant", "a"),
        Message("assistant", "b"),
        Message("user", " "),
        Message("assistant", "x"),
        Message("user", "q"),
    )
    fmt = ResponseFormat.from_schema("critique", {"type": "object", "properties": {"a": {"type": "string"}}})
    hi = (Message("user", "hi"),)
    requests = (
        request(provider, hi, tools=()),
        request(provider, odd, tools=()),
        request(provider, hi, tools=(), response_format=fmt),
    )
    backend = make(provider, fake)

    async def go() -> None:
        try:
            for req in requests:
                # Echo is no JSON: the structured request fails on Anthropic, after its body is sent.
                with contextlib.suppress(BackendError):
                    await backend.complete(req)
        finally:
            await backend.aclose()

    asyncio.run(go())
    assert bodies(fake) == UNCHANGED[provider]


# --------------------------------------------------------------------------- the cache


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_cache_replays_tool_calls(fake: FakeAPI, provider: str, tmp_path: Path) -> None:
    async def go() -> list[tuple[ModelResponse, bool]]:
        backend = make(provider, fake)
        store = Store.open(tmp_path / "calls.duckdb")
        writer = StoreWriter(store)
        try:
            gateway = Gateway({provider: backend}, writer)
            outcomes = [await gateway.complete(request(provider)) for _ in range(2)]
            return [(outcome.response, outcome.cached) for outcome in outcomes]
        finally:
            await backend.aclose()
            writer.close()
            store.close()

    (paid, cached_first), (replayed, cached_second) = asyncio.run(go())
    assert (cached_first, cached_second) == (False, True)
    assert replayed.tool_calls == paid.tool_calls == (CALL,)
    assert replayed.finish_reason == "tool_calls"
    assert fake.stats()["requests"] == 1


# --------------------------------------------------------------------------- the fake refuses like the APIs


def post(fake: FakeAPI, provider: str, body: dict[str, Any]) -> tuple[int, str]:
    path = "/v1/messages" if provider == "anthropic" else "/v1/chat/completions"
    req = urllib.request.Request(
        f"http://127.0.0.1:{fake.port}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "x-api-key": "k", "Authorization": "Bearer k"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())["error"]["message"]


OPENAI_TOOLS = [{"type": "function", "function": {"name": "lookup_order", "parameters": SCHEMA}}]
OPENAI_CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "lookup_order", "arguments": "{}"}}
    ],
}
USER = {"role": "user", "content": "Where is my order?"}


@pytest.mark.parametrize(
    ("messages", "extra", "words"),
    [
        (
            [USER, OPENAI_CALL, {"role": "tool", "tool_call_id": "call_2", "content": "x"}],
            {},
            "'tool_call_id' of 'call_2' not found in 'tool_calls' of previous message",
        ),
        (
            [USER, {"role": "tool", "tool_call_id": "call_1", "content": "x"}],
            {},
            "messages with role 'tool' must be a response to a preceeding message with 'tool_calls'",
        ),
        (
            [USER, OPENAI_CALL, USER],
            {},
            "The following tool_call_ids did not have response messages: call_1",
        ),
        ([USER], {"tools": None, "tool_choice": "auto"}, "'tool_choice' is only allowed when 'tools' are"),
        (
            [USER, {**OPENAI_CALL, "tool_calls": [{"type": "function", "function": {"name": "f"}}]}],
            {},
            "Missing required parameter: 'messages[1].tool_calls[0].id'",
        ),
    ],
)
def test_the_fake_refuses_malformed_openai_tool_traffic(
    fake: FakeAPI, messages: list[Any], extra: dict[str, Any], words: str
) -> None:
    body = {"model": "gpt-test", "messages": messages, "tools": OPENAI_TOOLS, **extra}
    body = {key: value for key, value in body.items() if value is not None}
    status, message = post(fake, "openai", body)
    assert status == 400
    assert words in message


ANTHROPIC_TOOLS = [{"name": "lookup_order", "description": "", "input_schema": SCHEMA}]
TOOL_USE = {
    "role": "assistant",
    "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup_order", "input": {}}],
}
TOOL_RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "shipped"}


@pytest.mark.parametrize(
    ("messages", "tools", "words"),
    [
        (
            [USER, TOOL_USE, USER],
            ANTHROPIC_TOOLS,
            "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1",
        ),
        (
            [USER, TOOL_USE, {"role": "user", "content": [TOOL_RESULT]}],
            None,
            "Requests which include `tool_use` or `tool_result` blocks must define tools.",
        ),
        (
            [USER, TOOL_USE, {"role": "user", "content": [{"type": "text", "text": "hm"}, TOOL_RESULT]}],
            ANTHROPIC_TOOLS,
            "messages.2: Did not find 1 `tool_result` block(s) at the beginning of this message",
        ),
        (
            [{"role": "user", "content": [TOOL_RESULT]}],
            ANTHROPIC_TOOLS,
            "unexpected `tool_use_id` found in `tool_result` blocks: toolu_1",
        ),
        (
            [USER, {"role": "assistant", "content": [{**TOOL_USE["content"][0], "input": "{}"}]}, USER],
            ANTHROPIC_TOOLS,
            "messages.1.content.0.tool_use.input: Input should be a valid dictionary",
        ),
    ],
)
def test_the_fake_refuses_malformed_anthropic_tool_traffic(
    fake: FakeAPI, messages: list[Any], tools: list[Any] | None, words: str
) -> None:
    body: dict[str, Any] = {"model": "claude-test", "max_tokens": 64, "messages": messages}
    if tools is not None:
        body["tools"] = tools
    status, message = post(fake, "anthropic", body)
    assert status == 400
    assert words in message


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_fake_never_calls_a_tool_the_request_does_not_allow(fake: FakeAPI, provider: str) -> None:
    fake.configure(responder="tool_responders:call_regardless")
    error = failure(make(provider, fake), request(provider, AFTER_LOOKUP, tool_choice="none"))
    assert (error.kind, error.status) == ("server", 500)
    assert "allows none" in str(error)


# --------------------------------------------------------------------------- the sim behind the fake


async def sim_loop(backend: Backend | SimBackend, provider: str) -> list[ModelResponse]:
    """The assistant's tool loop, at most three rounds, on the same request the episode would send."""
    tools = (
        LOOKUP,
        ToolSpec.from_schema(
            "issue_refund",
            "Refund an order.",
            {
                "type": "object",
                "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
                "required": ["order_id", "amount"],
            },
        ),
    )
    messages: tuple[Message, ...] = (Message("user", "Please refund my order A-1001, it arrived broken."),)
    replies = []
    for step in range(4):
        req = request(provider, messages, tools=tools, tool_choice="none" if step == 3 else "auto")
        reply = await backend.complete(req)
        replies.append(reply)
        if not reply.tool_calls:
            break
        messages += (Message("assistant", reply.text, tool_calls=reply.tool_calls),)
        messages += tuple(
            Message(
                "tool",
                json.dumps({"order_id": "A-1001", "total": 40.0, "refundable": True}),
                tool_call_id=c.id,
            )
            for c in reply.tool_calls
        )
    return replies


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_sim_responder_plays_the_sim_with_tools(fake: FakeAPI, provider: str) -> None:
    fake.configure(responder="sim")
    backend = make(provider, fake)

    async def go() -> tuple[list[ModelResponse], list[ModelResponse]]:
        try:
            return await sim_loop(backend, provider), await sim_loop(SimBackend(), provider)
        finally:
            await backend.aclose()

    through_fake, direct = asyncio.run(go())
    assert through_fake[0].tool_calls and not through_fake[-1].tool_calls  # it looked up, then answered
    assert [r.tool_calls for r in through_fake] == [r.tool_calls for r in direct]
    assert [r.finish_reason for r in through_fake] == [r.finish_reason for r in direct]
    if provider == "openai":
        # Anthropic's API has no seed, so only the OpenAI route hands the sim the same seed.
        assert [r.text for r in through_fake] == [r.text for r in direct]
    assert all(r.text.strip() or r.tool_calls for r in through_fake)


@pytest.mark.parametrize(
    ("text", "expected_text", "calls"),
    [
        # llama.cpp's server with Qwen's own template: the bare object, as the 0.5B writes it.
        ('{\n  "name": "lookup_order",\n  "arguments": {\n    "order_id": "NW-1"\n  }\n}', "", 1),
        ('```json\n{"name": "lookup_order", "arguments": {"order_id": "NW-1"}}\n```', "", 1),
        (
            'One moment. <tool_call>{"name": "lookup_order", "arguments": {"order_id": "NW-1"}}</tool_call>',
            "One moment.",
            1,
        ),
        ('{"name": "delete_everything", "arguments": {}}', None, 0),  # not one of the request's tools
        ('{"order_id": "NW-1"}', None, 0),
        ("Your order NW-1 is on its way.", None, 0),
    ],
)
def test_tool_calls_a_server_left_in_the_text_become_native_calls(
    text: str, expected_text: str | None, calls: int
) -> None:
    from dramaturg._model import ModelResponse
    from dramaturg.backends._openai import calls_written_as_text

    response = ModelResponse(text=text, input_tokens=5, output_tokens=5)
    read = calls_written_as_text(response, {"lookup_order"})
    assert len(read.tool_calls) == calls
    if calls:
        assert read.text == expected_text and read.finish_reason == "tool_calls"
        assert read.tool_calls[0].name == "lookup_order"
        assert json.loads(read.tool_calls[0].arguments) == {"order_id": "NW-1"}
        assert ("tool_calls_from_text", "yes") in read.annotations
    else:
        assert read == response


def test_a_reply_that_starts_as_a_call_is_that_call_never_dialogue() -> None:
    """What the live 0.5B wrote: a call followed by a result it made up, and a call whose
    arguments hold unescaped quotes. Neither may enter the dialogue as the assistant's words."""
    from dramaturg._model import ModelResponse
    from dramaturg.backends._openai import calls_written_as_text

    tools = {"lookup_order", "escalate"}
    made_up = '{"name": "lookup_order", "arguments": "{\\"order_id\\": \\"NW-1\\"}"}\n{"error": "No order"}'
    read = calls_written_as_text(ModelResponse(text=made_up, input_tokens=5, output_tokens=5), tools)
    assert read.text == "" and [(c.name, json.loads(c.arguments)) for c in read.tool_calls] == [
        ("lookup_order", {"order_id": "NW-1"})
    ]
    broken = '{"name": "escalate", "arguments": "{\\"summary\\": "the case broke"}"}'
    read = calls_written_as_text(ModelResponse(text=broken, input_tokens=5, output_tokens=5), tools)
    (call,) = read.tool_calls
    assert read.text == "" and call.name == "escalate" and call.arguments == broken
    # The toolbox then records it as invalid and answers with the error.
    box = ToolBox.build([FunctionTool(escalate_for_test)], object(), episode_id="e", max_steps=2)
    result = asyncio.run(box.call(call))
    assert result.status == "invalid" and box.rows[0].status == "invalid"


def escalate_for_test(env: object, summary: str) -> str:
    """Escalate the case (a tool named like support-refund's, for the call above)."""
    return "ESC-1"
