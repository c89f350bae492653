"""The model gateway: the one place where call policy lives.

cache lookup → (single flight) → concurrency bound → backend → retry with backoff → record.

Backends never sleep, retry or count; they raise :class:`BackendError` with a ``kind``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field

from dramaturg._errors import BackendError
from dramaturg._model import Backend, ModelRequest, ModelResponse
from dramaturg.memory import CallRecord, StoreWriter, utcnow

__all__ = ["CallOutcome", "Gateway", "GatewayStats", "RetryPolicy"]


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
class GatewayStats:
    """Counters for the run summary."""

    calls: int = 0  # completed calls paid for in this process
    cache_hits: int = 0
    failed_attempts: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    by_role: Counter[str] = field(default_factory=Counter)
    errors_by_kind: Counter[str] = field(default_factory=Counter)


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
    ):
        self.backends = backends
        self.writer = writer
        self.run_id = run_id
        self.retry = retry or RetryPolicy()
        self.stats = GatewayStats()
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: dict[str, asyncio.Future[CallOutcome]] = {}
        self._jitter = random.Random(jitter_seed)

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
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                async with self._slots:
                    response = await backend.complete(request)
            except BackendError as exc:
                await self._record_failure(request, key, episode_id, exc, attempt, started)
                if not exc.retryable or attempt >= self.retry.max_attempts:
                    raise
                self.stats.retries += 1
                await asyncio.sleep(self.retry.delay(attempt, exc.retry_after, self._jitter))
                continue
            latency_ms = (time.perf_counter() - started) * 1000
            call_id = uuid.uuid4().hex
            await self.writer.record_call(
                self._record(request, key, episode_id, call_id, latency_ms, attempt, response)
            )
            self.stats.calls += 1
            self.stats.by_role[request.role] += 1
            self.stats.input_tokens += response.input_tokens
            self.stats.output_tokens += response.output_tokens
            return CallOutcome(response, call_id, cached=False)

    def _record(
        self,
        request: ModelRequest,
        key: str,
        episode_id: str | None,
        call_id: str,
        latency_ms: float,
        attempt: int,
        response: ModelResponse,
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
            request_json=_request_json(request),
            latency_ms=latency_ms,
            created_at=utcnow(),
            response_text=response.text,
            finish_reason=response.finish_reason,
            input_tokens=response.input_tokens,
            output_tokens=response.output_tokens,
            cache_read_tokens=response.cache_read_tokens,
            cache_write_tokens=response.cache_write_tokens,
            attempt=attempt,
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
                request_json=_request_json(request),
                latency_ms=(time.perf_counter() - started) * 1000,
                created_at=utcnow(),
                attempt=attempt,
                error_kind=exc.kind,
                error=str(exc)[:2000],
            )
        )


def _request_json(request: ModelRequest) -> str:
    payload = asdict(request)
    return json.dumps(payload, sort_keys=True, ensure_ascii=False)
