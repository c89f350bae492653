"""Call pacing for the gateway: request and token rate limits, and a circuit breaker.

Everything here takes a :class:`Clock`, so tests drive time by hand instead of sleeping.

The rate limiter is a generic cell rate algorithm (GCRA): every permit reserves the next slot
on a schedule, so permits come out evenly spaced at the configured (or learned) rate. A token
bucket would let a full minute's worth of requests out at once; providers that enforce their
per-minute limits over shorter windows answer such bursts with 429s, and every 429 costs an
attempt and a retry-after pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from dramaturg._errors import BackendError
from dramaturg._model import ModelRequest, RateLimits

__all__ = [
    "BreakerSettings",
    "CircuitBreaker",
    "Clock",
    "ModelLimiters",
    "MonotonicClock",
    "RateLimiter",
    "estimate_input_tokens",
]


class Clock(Protocol):
    """Where the gateway reads the time and sleeps; tests substitute a manual clock."""

    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (at least until ``now()`` has advanced by that much)."""
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class RateLimiter:
    """Evenly spaced permits under a requests-per-minute and a tokens-per-minute limit.

    A permit for a call estimated at ``tokens`` tokens is granted at the first instant that
    both schedules allow; it then moves the request schedule on by ``60 / rpm`` seconds and
    the token schedule by ``tokens * 60 / tpm`` seconds. When the provider reports the real
    usage, :meth:`settle` moves the token schedule by the difference, so a run is paced by
    what it really spends rather than by its estimates. Time a schedule left unused is not
    banked: after an idle spell the next permit is immediate, but the one after it is a full
    interval later. That keeps traffic smooth.

    Providers enforce a per-minute limit over a short sliding window (600 rpm: at most 10
    requests in any second). A schedule alone cannot keep to that: a permit granted late
    (a busy event loop) bunches with the next one, and the window refuses the later of the
    two. So the limiter also keeps the times it really granted its last permits and grants
    none while the window ``window_s`` (widened by the margin) already holds the limit's
    share of them.

    The limiter learns from the server (:meth:`observe`, :meth:`rejected`):

    - the limits in its rate-limit headers: a lower limit than the configured one (or any
      limit, when none was configured) becomes the pace;
    - a 429 means the window was full when the request arrived, and that the server did
      not count it. The permit is taken back (from the schedule and the window), every
      permit waits for the ``retry-after`` the server named, and the margin grows by
      ``MARGIN_STEP``: a request is still refused when the one ``limit`` requests before it
      was delayed more on its way, and the margin is the room for that. It shrinks again by
      a thousandth of a step per call answered, so it settles where about one call in a
      thousand meets a 429 (each costs a request; the margin costs less than 1% of the pace).

    Args:
        rpm: requests per minute, or None for no request limit (until the server names one).
        tpm: tokens per minute, or None for no token limit (until the server names one).
        window_s: the sliding window the server enforces ``rpm`` over.
        clock: the time source (tests pass a manual clock).
        label: what the limiter paces (``backend:model``), named in what it learned.
        learned: the list that collects what it learned (shared by a run's limiters);
            a list of its own by default.

    Example:
        >>> limiter = RateLimiter(rpm=600)
        >>> # await limiter.acquire()  # permits 0.1 s apart, at most 10 in any second
    """

    MARGIN_STEP = 0.005
    MAX_MARGIN = 0.1

    def __init__(
        self,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        window_s: float = 1.0,
        clock: Clock | None = None,
        label: str | None = None,
        learned: list[str] | None = None,
    ):
        if rpm is not None and not (math.isfinite(rpm) and rpm > 0):
            raise ValueError(f"rpm must be a positive number, not {rpm!r}")
        if tpm is not None and not (math.isfinite(tpm) and tpm > 0):
            raise ValueError(f"tpm must be a positive number, not {tpm!r}")
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be a positive number, not {window_s!r}")
        self._clock = clock or MonotonicClock()
        self.window_s = window_s
        self.rpm: float | None = None
        self.tpm: float | None = None
        self._request_interval = 0.0
        self._seconds_per_token = 0.0
        self._granted: deque[float] = deque()  # when the permits in the window were granted
        self._window_lock = asyncio.Lock()
        self._set_limits(rpm, tpm)
        self._next_request = -math.inf
        self._next_token = -math.inf
        self._hold_until = -math.inf
        self.margin = 0.0
        self.label = label
        # What the server's headers taught, for the run summary.
        self.learned: list[str] = learned if learned is not None else []

    def _set_limits(self, rpm: float | None, tpm: float | None) -> None:
        self.rpm, self.tpm = rpm, tpm
        self._request_interval = 60.0 / rpm if rpm else 0.0
        self._seconds_per_token = 60.0 / tpm if tpm else 0.0
        share = max(1, int(rpm * self.window_s / 60)) if rpm else None
        self._granted = deque(self._granted, maxlen=share)

    @property
    def limits_tokens(self) -> bool:
        """Whether callers need to estimate tokens at all."""
        return self.tpm is not None

    async def acquire(self, tokens: int = 0) -> float:
        """Wait for the permit of one call estimated at ``tokens`` tokens.

        The slot is reserved before waiting (there is no await between reading and moving
        the schedules), so concurrent callers get consecutive slots in arrival order and a
        late wake-up never shifts later slots.

        Returns:
            When the permit was granted: pass it to :meth:`rejected` if the call meets a 429.
        """
        now = self._clock.now()
        hold = self._hold_until
        slot = max(now, hold)
        if self.rpm is not None or self.tpm is not None:
            slot = max(slot, self._next_request, self._next_token)
            self._next_request = slot + self._request_interval * (1 + self.margin)
            self._next_token = slot + max(tokens, 0) * self._seconds_per_token
        if slot > now:
            await self._clock.sleep(slot - now)
        if self._granted.maxlen is None:  # no request limit: no window to keep
            return self._clock.now()
        # One caller at a time reads the window and records its grant, so no two take the
        # same room; they come here in slot order.
        async with self._window_lock:
            now = self._clock.now()
            full = self._granted.maxlen is not None and len(self._granted) == self._granted.maxlen
            room_at = self._granted[0] + self.window_s * (1 + self.margin) if full else now
            if room_at > now:
                await self._clock.sleep(room_at - now)
                now = self._clock.now()
            if self._hold_until > max(hold, now):  # a 429 arrived meanwhile
                await self._clock.sleep(self._hold_until - now)
                now = self._clock.now()
            self._granted.append(now)
            return now

    def settle(self, reserved: int, actual: int) -> None:
        """Correct the token schedule once the provider has reported a call's real usage."""
        if self.tpm is None:
            return
        self._next_token += (actual - reserved) * self._seconds_per_token

    def observe(self, limits: RateLimits | None) -> None:
        """Learn from a successful response's rate-limit headers."""
        self.margin = max(0.0, self.margin - self.MARGIN_STEP / 1000)
        self._learn(limits)

    def _learn(self, limits: RateLimits | None) -> None:
        if limits is None:
            return
        rpm, tpm = self.rpm, self.tpm
        of = f" for {self.label}" if self.label else ""
        if limits.requests_per_minute and (rpm is None or limits.requests_per_minute < rpm):
            rpm = limits.requests_per_minute
            self.learned.append(f"{rpm:g} requests per minute{of}")
        if limits.tokens_per_minute and (tpm is None or limits.tokens_per_minute < tpm):
            tpm = limits.tokens_per_minute
            self.learned.append(f"{tpm:g} tokens per minute{of}")
        if (rpm, tpm) != (self.rpm, self.tpm):
            self._set_limits(rpm, tpm)

    def rejected(
        self,
        granted_at: float,
        retry_after: float,
        limits: RateLimits | None = None,
        *,
        tokens: int = 0,
    ) -> None:
        """A request was refused with 429: the server did not count it, so neither do we.

        Args:
            granted_at: what :meth:`acquire` returned for the refused request.
            retry_after: how long the server said to wait; every permit waits that long.
            limits: the 429's rate-limit headers, if any.
            tokens: the tokens reserved for the refused request, given back too.
        """
        self._learn(limits)
        with contextlib.suppress(ValueError):
            self._granted.remove(granted_at)
        self._next_request -= self._request_interval * (1 + self.margin)
        self._next_token -= tokens * self._seconds_per_token
        self._hold_until = max(self._hold_until, self._clock.now() + max(retry_after, 0.0))
        self.margin = min(self.MAX_MARGIN, self.margin + self.MARGIN_STEP)


class ModelLimiters:
    """A :class:`RateLimiter` for each model a run calls, made on its first call.

    Providers limit each model on its own: they count its requests and tokens apart, name
    its limits in its own headers and answer its own 429s. A run whose assistant and judge
    are different models (or different providers) must not pace one at the other's limit,
    nor hold one for the other's 429. So each ``backend:model`` gets its limiter, and the
    configured limits apply to each.

    Args:
        make: builds one limiter; called with ``label`` and ``learned`` keywords, so every
            limiter names its model and adds what it learns to :attr:`learned`.

    Example:
        >>> from functools import partial
        >>> limiters = ModelLimiters(partial(RateLimiter, rpm=600))  # 600 rpm for each model
        >>> limiters.for_model("openai", "gpt-4o") is limiters.for_model("openai", "gpt-4o")
        True
    """

    def __init__(self, make: Callable[..., RateLimiter] = RateLimiter):
        self._make = make
        self._by_model: dict[tuple[str, str], RateLimiter] = {}
        self.learned: list[str] = []  # every limiter's lessons, in the order they came

    def for_model(self, backend: str, model: str) -> RateLimiter:
        """The limiter of ``backend:model``."""
        limiter = self._by_model.get((backend, model))
        if limiter is None:
            limiter = self._make(label=f"{backend}:{model}", learned=self.learned)
            self._by_model[backend, model] = limiter
        return limiter


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """When the circuit breaker trips, and what it does then.

    Attributes:
        window: how many recent attempts are judged together.
        failure_ratio: the share of failed attempts in a full window that trips it.
        cooldown_s: how long every call pauses after a trip.
        max_pauses: trips answered with a pause; the next trip (before the window has been
            healthy again) stops the run.
    """

    window: int = 20
    failure_ratio: float = 0.8
    cooldown_s: float = 30.0
    max_pauses: int = 1


class CircuitBreaker:
    """Pauses all calls when most recent attempts failed; stops the run if that persists.

    Only transient failures count (the kinds the gateway retries): a bad key or a bad
    request is already fatal on its own. A tripped breaker clears its window, pauses for
    ``cooldown_s`` and lets calls through again. If the next full window trips it again, and
    the pause budget is spent, every call from then on raises
    ``BackendError(kind="circuit_open")``, which stops the run with its unfinished episodes
    left resumable.

    Args:
        settings: thresholds; the defaults suit real APIs.
        clock: the time source.
    """

    def __init__(self, settings: BreakerSettings | None = None, *, clock: Clock | None = None):
        self.settings = settings or BreakerSettings()
        self._clock = clock or MonotonicClock()
        self._recent: deque[str | None] = deque(maxlen=self.settings.window)
        self._open_until = -math.inf
        self._pauses = 0
        self._stopped: BackendError | None = None
        self.trips = 0

    @property
    def stopped(self) -> bool:
        return self._stopped is not None

    @property
    def degraded(self) -> bool:
        """Tripped since the last healthy window: failures now are the API's, not a call's."""
        return self._pauses > 0 or self._stopped is not None

    def give_up(self, last: BackendError) -> BackendError:
        """The error for a call that ran out of attempts while the breaker is degraded.

        Its failure is the API's state, not the call's, so it stops the run (resumably)
        instead of failing one episode.
        """
        if self._stopped is not None:
            return self._stopped
        return BackendError(
            f"most recent model calls failed and the API has not recovered (last: {last})",
            kind="circuit_open",
        )

    async def admit(self) -> None:
        """Return when a call may start; raise once the breaker has given up."""
        while True:
            if self._stopped is not None:
                raise self._stopped
            wait = self._open_until - self._clock.now()
            if wait <= 0:
                return
            await self._clock.sleep(wait)

    def record(self, failure_kind: str | None) -> None:
        """Record one attempt: ``None`` for a success, else the kind of its transient failure."""
        self._recent.append(failure_kind)
        if len(self._recent) < self.settings.window:
            return
        failures = Counter(kind for kind in self._recent if kind is not None)
        failed = sum(failures.values())
        if failed < self.settings.failure_ratio * self.settings.window:
            self._pauses = 0  # a healthy full window earns the pauses back
            return
        self.trips += 1
        self._recent.clear()
        kinds = ", ".join(f"{kind} {count}" for kind, count in failures.most_common())
        if self._pauses >= self.settings.max_pauses:
            self._stopped = BackendError(
                f"{failed} of the last {self.settings.window} model calls failed ({kinds}), "
                f"also after pausing {self.settings.cooldown_s:g} s",
                kind="circuit_open",
            )
            return
        self._pauses += 1
        self._open_until = self._clock.now() + self.settings.cooldown_s


def estimate_input_tokens(request: ModelRequest) -> int:
    """Input tokens of ``request`` as tiktoken counts them, plus chat-format overhead.

    For OpenAI models this is close to exact; for Claude it is an estimate (Anthropic's
    tokenizer is not public). The estimate only paces and budgets a call before it is made:
    the usage the API reports is what gets recorded and charged.
    """
    from dramaturg._tokens import count_tokens

    encoding = _encoding_for(request.backend, request.model)
    # ~4 tokens of framing per message and 3 to prime the reply, as in OpenAI's cookbook.
    total = count_tokens(request.system, encoding) + 3
    for message in request.messages:
        total += count_tokens(message.content, encoding) + 4
    return total


def _encoding_for(backend: str, model: str) -> str:
    if backend == "openai" and model.startswith(("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4")):
        return "o200k_base"
    return "cl100k_base"
