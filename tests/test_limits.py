"""Call policy without a network: pacing, backoff, the circuit breaker, prices, budget, hashing.

Time is a manual clock here, so nothing sleeps and nothing depends on machine speed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import partial
from pathlib import Path

import pytest
from dramaturg.memory import StoreWriter

from dramaturg import (
    BackendError,
    ConfigError,
    FunctionBackend,
    GenerationParams,
    Message,
    ModelRequest,
    ModelResponse,
    Store,
    request_hash,
)
from dramaturg._gateway import Gateway, RetryPolicy
from dramaturg._limits import (
    BreakerSettings,
    CircuitBreaker,
    ModelLimiters,
    RateLimiter,
    estimate_input_tokens,
)
from dramaturg._model import RateLimits, ResponseFormat, ToolCall, ToolSpec, request_json
from dramaturg._pricing import Budget, Price, PriceTable
from dramaturg.backends._sdk import kind_for_status, parse_rate_limits, parse_retry_after, scrub


class ManualClock:
    """A clock that only moves when someone sleeps on it; records every sleep."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)


class FrozenClock(ManualClock):
    """Records sleeps without moving: shows what each concurrent caller was told to wait."""

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)


def request(text: str = "hello", *, backend: str = "function", max_tokens: int = 100) -> ModelRequest:
    return ModelRequest(
        backend=backend,
        model="m",
        role="assistant",
        system="Be brief.",
        messages=(Message("user", text),),
        params=GenerationParams(temperature=0.5, max_tokens=max_tokens),
        seed=7,
    )


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[StoreWriter]:
    store = Store.open(tmp_path / "calls.duckdb")
    writer = StoreWriter(store)
    yield writer
    writer.close()
    store.close()


# -- the request hash ------------------------------------------------------------------------------


def test_golden_request_hash_is_pinned() -> None:
    # Changing this value invalidates every cache on disk: bump HASH_TAG when you must.
    pinned = ModelRequest(
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
    assert request_hash(pinned) == (
        "dh1-sha256:0dc907a5fa5328f25b115f8fed85eeb950c2b81fec6fd17b9d48534b4776de15"
    )


def test_stored_request_json_holds_every_field_as_asdict_does() -> None:
    # request_dict skips asdict's deep copies; what llm_calls.request stores must not change.
    rich = ModelRequest(
        backend="openai",
        model="m",
        role="assistant",
        system="Système",
        messages=(
            Message("user", "Hi"),
            Message("assistant", "", tool_calls=(ToolCall("c1", "lookup", '{"id": 7}'),)),
            Message("tool", "not found", tool_call_id="c1", is_error=True),
        ),
        params=GenerationParams(temperature=0.2, max_tokens=64),
        seed=3,
        response_format=ResponseFormat.from_schema("verdict", {"type": "object"}),
        tools=(ToolSpec.from_schema("lookup", "Find an order.", {"type": "object"}),),
        tool_choice="none",
    )
    assert request_json(rich) == json.dumps(dataclasses.asdict(rich), sort_keys=True, ensure_ascii=False)


# -- the rate limiter ------------------------------------------------------------------------------


def test_rpm_permits_are_evenly_spaced_not_bursty() -> None:
    clock = ManualClock()
    limiter = RateLimiter(rpm=600, clock=clock)

    async def permits() -> list[float]:
        times = []
        for _ in range(5):
            await limiter.acquire()
            times.append(round(clock.now() - 1000.0, 9))
        return times

    assert asyncio.run(permits()) == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_concurrent_callers_get_consecutive_slots() -> None:
    clock = FrozenClock()
    # A minute-long window: the schedule alone decides here (the window is tested below).
    limiter = RateLimiter(rpm=120, window_s=60, clock=clock)

    async def burst() -> None:
        await asyncio.gather(*(limiter.acquire() for _ in range(4)))

    asyncio.run(burst())
    # The first goes at once (no sleep); the rest are told to wait 0.5 s apart.
    assert [round(s, 9) for s in clock.sleeps] == [0.5, 1.0, 1.5]


def test_idle_time_is_not_banked_into_a_burst() -> None:
    clock = ManualClock()
    limiter = RateLimiter(rpm=60, clock=clock)

    async def scenario() -> None:
        await limiter.acquire()
        clock.t += 30.0  # idle for half a minute
        await limiter.acquire()
        await limiter.acquire()

    asyncio.run(scenario())
    assert clock.sleeps == [1.0]


class LateClock(ManualClock):
    """A busy event loop: the sleeps named in ``late`` (by their order) overshoot by 50 ms."""

    def __init__(self, late: set[int]) -> None:
        super().__init__()
        self.late = late

    async def sleep(self, seconds: float) -> None:
        overshoot = 0.05 if len(self.sleeps) in self.late else 0.0
        await super().sleep(seconds + overshoot)


def test_a_late_permit_never_lets_the_window_hold_more_than_the_limit() -> None:
    # 600 rpm over a 1 s window: at most 10 permits in any second. The schedule alone would
    # grant the 12th permit 1 s after a late 2nd one plus 50 ms less; the window makes it wait.
    clock = LateClock(late={0})
    limiter = RateLimiter(rpm=600, clock=clock)

    async def permits() -> list[float]:
        return [await limiter.acquire() - 1000.0 for _ in range(30)]

    granted = asyncio.run(permits())
    assert granted[1] == pytest.approx(0.15)  # the late one
    assert granted[2] == pytest.approx(0.2)  # the schedule goes on
    spans = [later - earlier for earlier, later in zip(granted, granted[10:], strict=False)]
    assert min(spans) >= 1.0 - 1e-9
    assert granted[11] == pytest.approx(1.15)  # waited for the late one to leave the window
    assert granted[12] == pytest.approx(1.2)  # and the schedule goes on from there
    assert granted[-1] == pytest.approx(2.9)


def test_a_429_gives_its_permit_back_holds_everyone_and_widens_the_margin() -> None:
    clock = ManualClock()
    limiter = RateLimiter(rpm=600, clock=clock)

    async def scenario() -> list[float]:
        granted = [await limiter.acquire() for _ in range(10)]
        limiter.rejected(granted[-1], retry_after=0.35)  # the 10th met a full window
        granted.append(await limiter.acquire())  # its retry
        return [round(t - 1000.0, 9) for t in granted]

    granted = asyncio.run(scenario())
    # The refused permit left the window, so the retry needs no slot of its own beyond the
    # hold the server asked for: 0.9 + 0.35.
    assert granted[-1] == pytest.approx(1.25)
    assert limiter.margin == pytest.approx(RateLimiter.MARGIN_STEP)
    for _ in range(1000):  # it narrows again as calls succeed
        limiter.observe(None)
    assert limiter.margin == pytest.approx(0.0)


def test_without_a_request_limit_no_permit_is_kept() -> None:
    clock = ManualClock()
    limiter = RateLimiter(tpm=60_000, clock=clock)

    async def permits() -> None:
        for _ in range(1000):
            await limiter.acquire(10)

    asyncio.run(permits())
    assert len(limiter._granted) == 0  # a run of millions of calls keeps no list of them


def test_the_servers_headers_teach_a_lower_limit_or_one_never_given() -> None:
    clock = ManualClock()
    given = RateLimiter(rpm=6000, clock=clock)
    given.observe(RateLimits(requests_per_minute=600, tokens_per_minute=90_000))
    assert (given.rpm, given.tpm) == (600, 90_000)
    assert given.learned == ["600 requests per minute", "90000 tokens per minute"]
    given.observe(RateLimits(requests_per_minute=1200))  # a higher limit never raises ours
    assert given.rpm == 600

    unset = RateLimiter(clock=clock)
    unset.observe(RateLimits(requests_per_minute=120, requests_remaining=3))

    async def permits() -> list[float]:
        return [round(await unset.acquire() - 1000.0, 9) for _ in range(3)]

    assert asyncio.run(permits()) == [0.0, 0.5, 1.0]


def test_rate_limit_headers_of_both_providers_parse() -> None:
    openai = parse_rate_limits(
        {
            "x-ratelimit-limit-requests": "600",
            "x-ratelimit-remaining-requests": "599",
            "x-ratelimit-reset-requests": "6m0.5s",
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-reset-tokens": "20ms",
        }
    )
    assert openai == RateLimits(600, 599, 360.5, 150_000, None, 0.02)
    now = datetime(2026, 12, 3, 18, 0, 0, tzinfo=UTC).timestamp()
    anthropic = parse_rate_limits(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2026-12-03T18:00:01.5Z",
            "anthropic-ratelimit-tokens-remaining": "oops",
        },
        now=now,
    )
    assert anthropic == RateLimits(50, 49, 1.5, None, None, None)
    assert parse_rate_limits({"content-type": "application/json"}) is None


def test_tpm_paces_by_estimate_and_settles_to_reported_usage() -> None:
    clock = FrozenClock()
    limiter = RateLimiter(tpm=6000, clock=clock)  # 100 tokens per second

    async def scenario() -> None:
        await limiter.acquire(200)  # reserves 2 s of the token schedule
        limiter.settle(reserved=200, actual=50)  # the call used 0.5 s worth
        await limiter.acquire(100)

    asyncio.run(scenario())
    assert clock.sleeps == [pytest.approx(0.5)]


def test_limiter_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="rpm"):
        RateLimiter(rpm=0)
    with pytest.raises(ValueError, match="tpm"):
        RateLimiter(tpm=float("nan"))


def test_input_estimate_counts_system_and_messages() -> None:
    short = estimate_input_tokens(request("hi"))
    longer = estimate_input_tokens(request("hi " * 100))
    assert 3 < short < 20
    assert longer - short >= 90


# -- retry-after and backoff ------------------------------------------------------------------------


def test_parse_retry_after_prefers_milliseconds_and_reads_dates() -> None:
    assert parse_retry_after({"retry-after-ms": "2500", "retry-after": "3"}) == 2.5
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "3600"}) == 3600.0  # honoured at any length
    when = datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC)
    now = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    assert parse_retry_after({"retry-after": format_datetime(when, usegmt=True)}, now=now) == 30.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "-1"}) is None
    assert parse_retry_after({}) is None


def test_backoff_is_jittered_exponential_and_yields_to_retry_after() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=60.0)
    rng = random.Random(0)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (10, 60.0)]:
        delay = policy.delay(attempt, None, rng)
        assert ceiling / 2 <= delay <= ceiling
    assert policy.delay(1, 45.0, rng) == 45.0
    assert policy.delay(10, 600.0, rng) == 600.0  # longer than max_delay_s, still honoured


def test_gateway_waits_the_retry_after_the_provider_asked_for(writer: StoreWriter) -> None:
    clock = ManualClock()
    answers: list[str | BackendError] = [BackendError("slow down", kind="rate_limit", retry_after=12.5), "ok"]

    def script(_: ModelRequest) -> str:
        answer = answers.pop(0)
        if isinstance(answer, BackendError):
            raise answer
        return answer

    backend = FunctionBackend(script)
    limiters = ModelLimiters(partial(RateLimiter, rpm=60, clock=clock))
    gateway = Gateway({"function": backend}, writer, clock=clock, limiters=limiters)
    outcome = asyncio.run(gateway.complete(request()))

    assert outcome.response.text == "ok"
    assert len(backend.requests) == 2
    # The retry slept exactly the provider's retry-after, then took its limiter permit (1 s
    # after the first attempt's, already past): the limiter added no wait of its own.
    assert clock.sleeps == [12.5]
    assert gateway.stats.retries == 1
    assert gateway.stats.errors_by_kind == {"rate_limit": 1}


def test_each_model_is_paced_and_held_by_its_own_limits(writer: StoreWriter) -> None:
    # Providers limit each model apart: the assistant's 429 (and the lower limit its headers
    # name) must neither hold nor slow the judge, a different model on the same backend.
    clock = ManualClock()
    refusal = BackendError(
        "slow down", kind="rate_limit", retry_after=12.5, rate_limits=RateLimits(requests_per_minute=30)
    )
    refusals = {"assistant-model": [refusal]}

    def script(sent: ModelRequest) -> str:
        if refusals.get(sent.model):
            raise refusals[sent.model].pop()
        return f"ok from {sent.model}"

    limiters = ModelLimiters(partial(RateLimiter, rpm=600, clock=clock))
    gateway = Gateway({"function": FunctionBackend(script)}, writer, clock=clock, limiters=limiters)

    async def assistant_then_judge() -> list[str]:
        first = await gateway.complete(dataclasses.replace(request("a"), model="assistant-model"))
        second = await gateway.complete(dataclasses.replace(request("b"), model="judge-model"))
        return [first.response.text, second.response.text]

    assert asyncio.run(assistant_then_judge()) == ["ok from assistant-model", "ok from judge-model"]
    # The assistant waited out its retry-after; the judge's call went at once. (One limiter
    # for both would have paced the judge at the assistant's 30 rpm: 2 s after its retry.)
    assert clock.sleeps == [12.5]
    assert limiters.for_model("function", "assistant-model").rpm == 30
    assert limiters.for_model("function", "judge-model").rpm == 600
    assert gateway.stats.learned_limits == ["30 requests per minute for function:assistant-model"]


def test_every_retry_goes_through_the_limiter(writer: StoreWriter) -> None:
    clock = ManualClock()
    answers: list[str | BackendError] = [BackendError("boom", kind="server"), "ok"]

    def script(_: ModelRequest) -> str:
        answer = answers.pop(0)
        if isinstance(answer, BackendError):
            raise answer
        return answer

    gateway = Gateway(
        {"function": FunctionBackend(script)},
        writer,
        clock=clock,
        limiters=ModelLimiters(partial(RateLimiter, rpm=6, clock=clock)),  # one permit per 10 s
        retry=RetryPolicy(base_delay_s=0.5),
    )
    asyncio.run(gateway.complete(request()))
    backoff, permit_wait = clock.sleeps
    assert 0.25 <= backoff <= 0.5
    assert backoff + permit_wait == pytest.approx(10.0)


def test_non_retryable_errors_are_not_retried_and_auth_sticks(writer: StoreWriter) -> None:
    backend = FunctionBackend(
        lambda _: (_ for _ in ()).throw(BackendError("bad key", kind="auth", status=401))
    )
    gateway = Gateway({"function": backend}, writer, clock=ManualClock())

    with pytest.raises(BackendError) as first:
        asyncio.run(gateway.complete(request("one")))
    with pytest.raises(BackendError) as second:
        asyncio.run(gateway.complete(request("two")))

    assert first.value.kind == second.value.kind == "auth"
    assert len(backend.requests) == 1, "after a 401 the API is not asked again"


def test_gateway_timeout_is_a_retryable_timeout(writer: StoreWriter) -> None:
    calls = 0

    async def slow_then_fast(_: ModelRequest) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(10)
        return "ok"

    gateway = Gateway(
        {"function": FunctionBackend(slow_then_fast)}, writer, timeout_s=0.05, clock=ManualClock()
    )
    outcome = asyncio.run(gateway.complete(request()))
    assert outcome.response.text == "ok"
    assert gateway.stats.errors_by_kind == {"timeout": 1}


# -- the circuit breaker ----------------------------------------------------------------------------


def test_breaker_pauses_then_stops_when_failures_persist() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(BreakerSettings(window=10, failure_ratio=0.8, cooldown_s=30), clock=clock)

    async def scenario() -> None:
        for _ in range(8):
            breaker.record("server")
        for _ in range(2):
            breaker.record(None)
        await breaker.admit()  # 8 of 10 failed: trips
        assert clock.sleeps == [30.0]
        for _ in range(10):
            breaker.record("overloaded")
        with pytest.raises(BackendError) as stopped:
            await breaker.admit()
        assert stopped.value.kind == "circuit_open"
        assert "10 of the last 10" in str(stopped.value)

    asyncio.run(scenario())
    assert breaker.trips == 2


def test_breaker_ignores_a_failure_share_below_the_threshold() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(BreakerSettings(window=10, failure_ratio=0.8), clock=clock)
    for index in range(200):
        breaker.record("server" if index % 10 < 7 else None)  # 70 % failures
    asyncio.run(breaker.admit())
    assert (breaker.trips, clock.sleeps) == (0, [])


def test_healthy_window_earns_the_pause_back() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(BreakerSettings(window=4, failure_ratio=0.75, cooldown_s=5), clock=clock)
    for _ in range(3):
        for _ in range(4):
            breaker.record("server")  # trip: pause
        for _ in range(4):
            breaker.record(None)  # healthy window: pause budget restored
    asyncio.run(breaker.admit())
    assert not breaker.stopped
    assert breaker.trips == 3


def test_gateway_stops_with_circuit_open_after_one_pause(writer: StoreWriter) -> None:
    clock = ManualClock()

    def broken(_: ModelRequest) -> str:
        raise BackendError("upstream down", kind="server", status=500)

    backend = FunctionBackend(broken)
    gateway = Gateway(
        {"function": backend},
        writer,
        clock=clock,
        retry=RetryPolicy(max_attempts=1000),
        breaker=CircuitBreaker(BreakerSettings(window=5, cooldown_s=60), clock=clock),
    )
    with pytest.raises(BackendError) as stopped:
        asyncio.run(gateway.complete(request()))
    assert stopped.value.kind == "circuit_open"
    assert len(backend.requests) == 10  # a window, the pause, a second window, stop
    assert gateway.breaker.trips == 2
    assert sum(clock.sleeps) >= 60.0, "the breaker paused calls for its cooldown"


# -- prices and budget ------------------------------------------------------------------------------


def test_price_lookup_matches_snapshots_longest_key_first() -> None:
    table = PriceTable()
    sonnet = table.lookup("anthropic", "claude-sonnet-4-5-20250929")
    assert sonnet is not None
    assert (sonnet.input, sonnet.output) == (3.0, 15.0)
    mini = table.lookup("openai", "gpt-4o-mini-2024-07-18")
    assert mini is not None
    assert mini.input == 0.15
    assert table.lookup("openai", "gpt-4o") == PriceTable().lookup("openai", "gpt-4o-2024-08-06")
    assert table.lookup("openai", "gpt-4oops") is None  # a prefix must end at a '-'
    assert table.lookup("openai", "llama-3-8b") is None
    assert table.lookup("sim", "sim") == Price(input=0, output=0)


def test_price_cost_charges_each_token_kind_once() -> None:
    price = Price(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
    response = ModelResponse(
        text="x", input_tokens=1000, output_tokens=200, cache_read_tokens=10_000, cache_write_tokens=2000
    )
    assert price.cost(response) == pytest.approx((3000 + 3000 + 3000 + 7500) / 1e6)
    assert price.ceiling(1000, 500) == pytest.approx((1000 * 3.75 + 500 * 15) / 1e6)


def test_price_file_overrides_and_names_bad_fields(tmp_path: Path) -> None:
    good = tmp_path / "prices.json"
    good.write_text(
        json.dumps(
            {"claude-sonnet-4-5": {"input": 1, "output": 2}, "openai:local": {"input": 0, "output": 0}}
        )
    )
    table = PriceTable.from_file(good)
    assert table.lookup("anthropic", "claude-sonnet-4-5-20250929") == Price(input=1, output=2)
    assert table.lookup("openai", "local") == Price(input=0, output=0)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"m": {"input": 1, "outptu": 2}}))
    with pytest.raises(ConfigError, match=r"bad.json: field 'm\.output'"):
        PriceTable.from_file(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        PriceTable.from_file(tmp_path / "missing.json")


def test_budget_refuses_a_call_that_could_overspend() -> None:
    async def scenario() -> None:
        budget = Budget(1.0, spent_usd=0.5)
        with pytest.raises(BackendError) as refused:
            await budget.reserve(0.6)  # 0.5 spent + 0.6 > 1.0 whatever happens in flight
        assert refused.value.kind == "budget"
        assert "limit $1.0000 reached: $0.5000 spent" in str(refused.value)
        held = await budget.reserve(0.3)
        budget.settle(held, 0.1)
        assert budget.spent_usd == pytest.approx(0.6)
        assert budget.reserved_usd == 0.0

    asyncio.run(scenario())


def test_budget_waits_for_calls_in_flight_instead_of_stopping() -> None:
    async def scenario() -> None:
        budget = Budget(1.0)
        first = await budget.reserve(0.6)
        second = asyncio.create_task(budget.reserve(0.6))  # fits only once the first settles
        await asyncio.sleep(0)
        assert not second.done()
        budget.settle(first, 0.2)
        assert await second == 0.6
        with pytest.raises(BackendError):
            await budget.reserve(0.9)  # 0.2 spent + 0.9 > 1.0 even with nothing in flight

    asyncio.run(scenario())


def test_gateway_records_cost_and_refuses_over_budget(writer: StoreWriter) -> None:
    backend = FunctionBackend(lambda _: ModelResponse(text="fine", input_tokens=1000, output_tokens=100))
    gateway = Gateway(
        {"function": backend},
        writer,
        prices=PriceTable({"m": Price(input=1.0, output=10.0)}),
        budget=Budget(0.01),
    )
    asyncio.run(gateway.complete(request("first", max_tokens=100)))
    assert gateway.stats.cost_usd == pytest.approx(0.002)
    assert gateway.stats.usage[("assistant", "function:m")].calls == 1
    with pytest.raises(BackendError) as refused:
        asyncio.run(gateway.complete(request(" word" * 10_000, max_tokens=100)))  # ~$0.01 of input
    assert refused.value.kind == "budget"
    assert len(backend.requests) == 1, "a refused call never reaches the backend"
    cost = writer.store.sql("SELECT sum(cost_usd) FROM llm_calls WHERE status = 'ok'")[0][0]
    assert cost == pytest.approx(0.002)


# -- error classification and secrets --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, "rate_limit"),
        (529, "overloaded"),
        (503, "overloaded"),
        (500, "server"),
        (502, "server"),
        (408, "timeout"),
        (401, "auth"),
        (403, "auth"),
        (400, "bad_request"),
        (404, "bad_request"),
        (422, "bad_request"),
    ],
)
def test_status_classification(status: int, kind: str) -> None:
    assert kind_for_status(status) == kind


def test_scrub_masks_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-abcdef123456")
    assert scrub("Incorrect API key provided: sk-live-abcdef123456.", "OPENAI_API_KEY") == (
        "Incorrect API key provided: ***."
    )
