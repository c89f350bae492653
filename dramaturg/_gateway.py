"""The model gateway: the one place where call policy lives.

cache lookup → (single flight) → circuit breaker → concurrency bound → budget reservation
→ rate limit (RPM/TPM) → backend (with timeout) → retry with backoff → record usage and cost.

Backends never sleep, retry or count; they raise :class:`BackendError` with a ``kind``. A
retry goes back through the breaker, the budget and the rate limiter like a first attempt:
retries that skip the limiter collide with paced traffic and burn attempts on 429s.

A server that refuses ``response_format`` (``BackendError(kind="unsupported")``) is asked the
same request again without it, at once, and that (backend, model) is sent no schema for the
rest of the run: parsing the reply stays the caller's job either way. The answer is stored
under the original request's hash, so a replay of the run hits the cache.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from functools import partial

from dramaturg._errors import BackendError
from dramaturg._limits import (
    CircuitBreaker,
    Clock,
    ModelLimiters,
    MonotonicClock,
    RateLimiter,
    estimate_input_tokens,
)
from dramaturg._model import Backend, ModelRequest, ModelResponse, request_json, tool_calls_from_json
from dramaturg._pricing import Budget, PriceTable
from dramaturg.memory import CallRecord, StoreWriter, utcnow

__all__ = ["CallOutcome", "Gateway", "GatewayStats", "RetryPolicy", "Usage"]

# Errors after which every further call is known to fail the same way (a bad key, no quota):
# the gateway answers later calls with the same error at once instead of asking the API again.
_STICKY_KINDS = frozenset({"auth"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter; a provider's ``retry-after`` wins when longer."""

    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        backoff = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        jittered = rng.uniform(backoff / 2, backoff)
        return max(jittered, retry_after or 0.0)


@dataclass(slots=True)
class Usage:
    """Tokens and cost of the calls paid for under one heading (a role and model, say)."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, response: ModelResponse, cost_usd: float) -> None:
        """Count one paid call."""
        self.calls += 1
        self.input_tokens += response.input_tokens
        self.output_tokens += response.output_tokens
        self.cache_read_tokens += response.cache_read_tokens
        self.cache_write_tokens += response.cache_write_tokens
        self.cost_usd += cost_usd

    def include(self, more: Usage) -> None:
        """Count ``more``'s calls, tokens and cost too (another process's, say)."""
        self.calls += more.calls
        self.input_tokens += more.input_tokens
        self.output_tokens += more.output_tokens
        self.cache_read_tokens += more.cache_read_tokens
        self.cache_write_tokens += more.cache_write_tokens
        self.cost_usd += more.cost_usd


@dataclass(slots=True)
class GatewayStats:
    """Counters for the run summary."""

    cache_hits: int = 0
    failed_attempts: int = 0
    retries: int = 0
    prior_cost_usd: float = 0.0  # spent on this run by earlier invocations (before a resume)
    errors_by_kind: Counter[str] = field(default_factory=Counter)
    total: Usage = field(default_factory=Usage)  # every call paid for in this process
    # (role, "backend:model") -> what its calls used and cost in this process
    usage: dict[tuple[str, str], Usage] = field(default_factory=dict)
    unpriced: set[str] = field(default_factory=set)  # "backend:model"s without a price entry
    # "backend:model"s that refused response_format: their replies are prompt-only JSON
    schema_fallbacks: set[str] = field(default_factory=set)
    # limits the servers' rate-limit headers set below the configured ones ("600 requests
    # per minute for openai:gpt-4o"), in the order the limiters learned them
    learned_limits: list[str] = field(default_factory=list)

    def add(self, request: ModelRequest, response: ModelResponse, cost_usd: float | None) -> None:
        """Count one paid call; ``cost_usd`` None means the model has no price entry."""
        label = f"{request.backend}:{request.model}"
        if cost_usd is None:
            self.unpriced.add(label)
        cost = cost_usd or 0.0
        self.total.add(response, cost)
        self.usage.setdefault((request.role, label), Usage()).add(response, cost)

    def include(self, more: GatewayStats) -> None:
        """Count another gateway's (or a shard's) calls, attempts and findings too."""
        self.cache_hits += more.cache_hits
        self.failed_attempts += more.failed_attempts
        self.retries += more.retries
        self.errors_by_kind.update(more.errors_by_kind)
        self.total.include(more.total)
        for key, usage in more.usage.items():
            self.usage.setdefault(key, Usage()).include(usage)
        self.unpriced |= more.unpriced
        self.schema_fallbacks |= more.schema_fallbacks
        # On Ray each task learns its share of a limit the provider names: say each once.
        self.learned_limits.extend(limit for limit in more.learned_limits if limit not in self.learned_limits)

    # The summary reads the totals under these names.
    @property
    def calls(self) -> int:
        return self.total.calls

    @property
    def input_tokens(self) -> int:
        return self.total.input_tokens

    @property
    def output_tokens(self) -> int:
        return self.total.output_tokens

    @property
    def cache_read_tokens(self) -> int:
        return self.total.cache_read_tokens

    @property
    def cache_write_tokens(self) -> int:
        return self.total.cache_write_tokens

    @property
    def cost_usd(self) -> float:
        return self.total.cost_usd


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """A response and the ``llm_calls`` row that produced it."""

    response: ModelResponse
    call_id: str
    cached: bool


class Gateway:
    """Routes every model call of a run through the cache and the call policy.

    Args:
        backends: backend instances by name (``request.backend`` picks one).
        writer: the store's single writer; completed calls are durable before they are used.
        run_id: recorded on each call.
        concurrency: most calls in flight at once.
        retry: the retry policy for retryable errors.
        jitter_seed: seeds the backoff jitter, so a run's retry timing is reproducible.
        limiters: pace each model's attempts under its RPM and TPM limits; None for no
            limits until a server names them.
        breaker: pauses, then stops, calls when most recent attempts fail.
        prices: prices each paid call into ``llm_calls.cost_usd``.
        budget: refuses a call (``BackendError(kind="budget")``) that could overspend it.
        timeout_s: the longest one attempt may take before it counts as a timeout.
        clock: the time source for retry sleeps (tests pass a manual clock).
    """

    def __init__(
        self,
        backends: dict[str, Backend],
        writer: StoreWriter,
        *,
        run_id: str | None = None,
        concurrency: int = 8,
        retry: RetryPolicy | None = None,
        jitter_seed: int = 0,
        limiters: ModelLimiters | None = None,
        breaker: CircuitBreaker | None = None,
        prices: PriceTable | None = None,
        budget: Budget | None = None,
        timeout_s: float | None = None,
        clock: Clock | None = None,
    ):
        self.backends = backends
        self.writer = writer
        self.run_id = run_id
        self.retry = retry or RetryPolicy()
        self.stats = GatewayStats()
        self.limiters = limiters or ModelLimiters(partial(RateLimiter, clock=clock))
        self.stats.learned_limits = self.limiters.learned
        self.breaker = breaker or CircuitBreaker(clock=clock)
        self.prices = prices or PriceTable()
        self.budget = budget
        self.timeout_s = timeout_s
        self._clock = clock or MonotonicClock()
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: dict[str, asyncio.Future[CallOutcome]] = {}
        self._jitter = random.Random(jitter_seed)
        self._sticky: BackendError | None = None
        self._no_schema: set[tuple[str, str]] = set()  # (backend, model)s that refused one

    async def complete(self, request: ModelRequest, *, episode_id: str | None = None) -> CallOutcome:
        """The response to ``request``, from the cache when it was ever answered before."""
        key = request.hash  # raises on an unhashable request: never a silent cache miss
        cached = await self.writer.cached_call(key)
        if cached is not None:
            self.stats.cache_hits += 1
            response = ModelResponse(
                text=cached.response_text,
                input_tokens=cached.input_tokens,
                output_tokens=cached.output_tokens,
                finish_reason=cached.finish_reason,
                cache_read_tokens=cached.cache_read_tokens,
                cache_write_tokens=cached.cache_write_tokens,
                annotations=cached.annotations,
                tool_calls=tool_calls_from_json(cached.tool_calls_json),
            )
            return CallOutcome(response, cached.call_id, cached=True)
        # Identical requests in flight at once are paid for once.
        if key in self._in_flight:
            self.stats.cache_hits += 1
            outcome = await asyncio.shield(self._in_flight[key])
            return CallOutcome(outcome.response, outcome.call_id, cached=True)
        future: asyncio.Future[CallOutcome] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            outcome = await self._call_with_retries(request, key, episode_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) re-raise it themselves
            raise
        finally:
            del self._in_flight[key]
        future.set_result(outcome)
        return outcome

    async def _call_with_retries(
        self, request: ModelRequest, key: str, episode_id: str | None
    ) -> CallOutcome:
        backend = self.backends[request.backend]
        price = self.prices.lookup(request.backend, request.model)
        limiter = self.limiters.for_model(request.backend, request.model)
        # Estimating costs a tokenizer pass: only when a token limit or the budget needs it.
        budgeted = self.budget is not None and price is not None
        needs_estimate = limiter.limits_tokens or budgeted
        input_estimate = estimate_input_tokens(request) if needs_estimate else 0
        # Reserve what the provider itself counts against the limit when a call starts: the
        # input plus max_tokens of output. settle() gives back what the reply did not use.
        tokens = input_estimate + request.params.max_tokens if limiter.limits_tokens else 0
        ceiling = price.ceiling(input_estimate, request.params.max_tokens) if price else 0.0
        # What goes to the backend; `key` stays the original request's hash throughout.
        sent = request
        attempt = 0
        while True:
            attempt += 1
            # Checked per attempt: a concurrent call may have learned of a refusal meanwhile.
            sent = self._without_refused_schema(sent)
            if self._sticky is not None:
                raise self._sticky
            await self.breaker.admit()
            started = time.perf_counter()
            async with self._slots:
                # Reserved inside the slot, so only calls about to start hold budget.
                held = await self.budget.reserve(ceiling) if self.budget is not None else 0.0
                try:
                    granted_at = await limiter.acquire(tokens)
                    started = time.perf_counter()
                    response = await self._send(backend, sent)
                except BackendError as exc:
                    failure: BackendError | None = exc
                    if exc.kind == "rate_limit":
                        # Never charged by the server: the model's limiter takes back the
                        # slot and holds its calls until the server has room.
                        if self.budget is not None:
                            self.budget.settle(held, 0.0)
                        limiter.rejected(
                            granted_at,
                            # No retry-after: the backoff's growing pause, held by the model's calls.
                            exc.retry_after
                            if exc.retry_after is not None
                            else self.retry.delay(attempt, None, self._jitter),
                            exc.rate_limits,
                            tokens=tokens,
                        )
                    else:
                        self._release(limiter, held, tokens, input_estimate)
                except BaseException:
                    self._release(limiter, held, tokens, input_estimate)
                    raise
                else:
                    failure = None
                    cost = price.cost(response) if price is not None else None
                    if self.budget is not None:
                        self.budget.settle(held, cost or 0.0)
                    used = response.input_tokens + response.output_tokens
                    used += response.cache_read_tokens + response.cache_write_tokens
                    limiter.settle(tokens, used or tokens)
                    limiter.observe(response.rate_limits)
            if failure is not None:
                await self._record_failure(sent, key, episode_id, failure, attempt, started)
                if failure.kind == "unsupported" and sent.response_format is not None:
                    # Not a retry of the same request but a different one, sent once and at
                    # once; the loop's next attempt drops the schema.
                    self._no_schema.add((sent.backend, sent.model))
                    self.stats.schema_fallbacks.add(f"{sent.backend}:{sent.model}")
                    continue
                if failure.retryable:
                    self.breaker.record(failure.kind)
                if failure.kind in _STICKY_KINDS:
                    self._sticky = failure
                exhausted = attempt >= self.retry.max_attempts
                if failure.retryable and exhausted and self.breaker.degraded:
                    raise self.breaker.give_up(failure) from failure
                if not failure.retryable or exhausted:
                    raise failure
                self.stats.retries += 1
                if failure.kind != "rate_limit":  # the limiter paces a 429's retry
                    await self._clock.sleep(self.retry.delay(attempt, failure.retry_after, self._jitter))
                continue
            self.breaker.record(None)
            latency_ms = (time.perf_counter() - started) * 1000
            call_id = uuid.uuid4().hex
            await self.writer.record_call(
                self._record(sent, key, episode_id, call_id, latency_ms, attempt, response, cost),
                wait=getattr(backend, "paid", True),
            )
            self.stats.add(request, response, cost)
            return CallOutcome(response, call_id, cached=False)

    def _without_refused_schema(self, request: ModelRequest) -> ModelRequest:
        if request.response_format is not None and (request.backend, request.model) in self._no_schema:
            return replace(request, response_format=None)
        return request

    def _release(self, limiter: RateLimiter, held_usd: float, tokens: int, input_estimate: int) -> None:
        """Undo a failed attempt's reservations: providers bill no output for a failed call."""
        if self.budget is not None:
            self.budget.settle(held_usd, 0.0)
        limiter.settle(tokens, input_estimate)

    async def _send(self, backend: Backend, request: ModelRequest) -> ModelResponse:
        if self.timeout_s is None:
            return await backend.complete(request)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await backend.complete(request)
        except TimeoutError as exc:
            raise BackendError(
                f"{request.backend}: no reply within {self.timeout_s:g} s", kind="timeout"
            ) from exc

    def _record(
        self,
        request: ModelRequest,
        key: str,
        episode_id: str | None,
        call_id: str,
        latency_ms: float,
        attempt: int,
        response: ModelResponse,
        cost_usd: float | None = None,
    ) -> CallRecord:
        return CallRecord(
            call_id=call_id,
            request_hash=key,
            run_id=self.run_id,
            episode_id=episode_id,
            backend=request.backend,
            model=request.model,
            role=request.role,
            status="ok",
            request_json=request_json(request),
            latency_ms=latency_ms,
            created_at=utcnow(),
            response_text=response.text,
            finish_reason=response.finish_reason,
            input_tokens=response.input_tokens,
            output_tokens=response.output_tokens,
            cache_read_tokens=response.cache_read_tokens,
            cache_write_tokens=response.cache_write_tokens,
            cost_usd=cost_usd or 0.0,
            annotations=dict(response.annotations) or None,
            attempt=attempt,
            tool_calls_json=json.dumps([asdict(call) for call in response.tool_calls])
            if response.tool_calls
            else None,
        )

    async def _record_failure(
        self,
        request: ModelRequest,
        key: str,
        episode_id: str | None,
        exc: BackendError,
        attempt: int,
        started: float,
    ) -> None:
        self.stats.failed_attempts += 1
        self.stats.errors_by_kind[exc.kind] += 1
        await self.writer.record_call(
            CallRecord(
                call_id=uuid.uuid4().hex,
                request_hash=key,
                run_id=self.run_id,
                episode_id=episode_id,
                backend=request.backend,
                model=request.model,
                role=request.role,
                status="error",
                request_json=request_json(request),
                latency_ms=(time.perf_counter() - started) * 1000,
                created_at=utcnow(),
                attempt=attempt,
                error_kind=exc.kind,
                error=str(exc)[:2000],
            )
        )
