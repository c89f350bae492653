"""What model calls cost: a price table per model, and the run's budget.

Prices are USD per million tokens. The built-in table covers a few Claude and OpenAI models
at their published list prices when this table was written; check your provider's price
page and override with ``--prices FILE.json``, whose entries win over the built-ins::

    {"claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75},
     "my-vllm-model": {"input": 0, "output": 0}}

A key matches the model name exactly or as a prefix followed by ``-`` (so
``claude-sonnet-4-5`` also prices ``claude-sonnet-4-5-20250929``); the longest key wins, and
a ``backend:model`` key wins over a bare model name.

Token categories follow :class:`~dramaturg.ModelResponse`: ``input_tokens`` are the input
tokens billed at the base rate, ``cache_read_tokens`` and ``cache_write_tokens`` the ones
billed at the cache rates, so the three never overlap.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dramaturg._errors import BackendError, ConfigError
from dramaturg._model import ModelResponse

__all__ = ["BUILTIN_PRICES", "Budget", "Price", "PriceTable"]

_PER_TOKEN = 1e-6  # prices are per million tokens


class Price(BaseModel):
    """USD per million tokens of one model. Cache rates default to the input rate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)

    def cost(self, response: ModelResponse) -> float:
        """The cost in USD of a completed call."""
        cache_read = self.input if self.cache_read is None else self.cache_read
        cache_write = self.input if self.cache_write is None else self.cache_write
        return _PER_TOKEN * (
            response.input_tokens * self.input
            + response.output_tokens * self.output
            + response.cache_read_tokens * cache_read
            + response.cache_write_tokens * cache_write
        )

    def ceiling(self, input_tokens: int, max_output_tokens: int) -> float:
        """The most a call of ``input_tokens`` may cost if it writes ``max_output_tokens``.

        Input is charged at the dearest of the input and cache-write rates, since the
        provider decides which applies.
        """
        cache_write = self.input if self.cache_write is None else self.cache_write
        return _PER_TOKEN * (input_tokens * max(self.input, cache_write) + max_output_tokens * self.output)


FREE = Price(input=0, output=0)

# List prices, USD per million tokens (Anthropic: 5-minute cache writes; OpenAI bills no
# cache writes, only discounted cached input).
BUILTIN_PRICES: dict[str, Price] = {
    "claude-opus-4-5": Price(input=5.0, output=25.0, cache_read=0.5, cache_write=6.25),
    "claude-opus-4-1": Price(input=15.0, output=75.0, cache_read=1.5, cache_write=18.75),
    "claude-opus-4": Price(input=15.0, output=75.0, cache_read=1.5, cache_write=18.75),
    "claude-sonnet-4-5": Price(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75),
    "claude-sonnet-4": Price(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75),
    "claude-haiku-4-5": Price(input=1.0, output=5.0, cache_read=0.1, cache_write=1.25),
    "claude-3-5-haiku": Price(input=0.8, output=4.0, cache_read=0.08, cache_write=1.0),
    "gpt-5": Price(input=1.25, output=10.0, cache_read=0.125),
    "gpt-5-mini": Price(input=0.25, output=2.0, cache_read=0.025),
    "gpt-5-nano": Price(input=0.05, output=0.4, cache_read=0.005),
    "gpt-4.1": Price(input=2.0, output=8.0, cache_read=0.5),
    "gpt-4.1-mini": Price(input=0.4, output=1.6, cache_read=0.1),
    "gpt-4.1-nano": Price(input=0.1, output=0.4, cache_read=0.025),
    "gpt-4o": Price(input=2.5, output=10.0, cache_read=1.25),
    "gpt-4o-mini": Price(input=0.15, output=0.6, cache_read=0.075),
}


class PriceTable:
    """Prices by model: the built-in table with the user's entries on top.

    Args:
        overrides: entries that win over the built-ins (keys ``model`` or ``backend:model``).

    Example:
        >>> table = PriceTable({"my-model": Price(input=1, output=2)})
        >>> table.lookup("openai", "my-model").output
        2.0
    """

    def __init__(self, overrides: Mapping[str, Price] | None = None):
        self._prices = {**BUILTIN_PRICES, **(overrides or {})}
        self._found: dict[tuple[str, str], Price | None] = {}  # each model matched once, not per call

    @classmethod
    def from_file(cls, path: str | Path | None) -> PriceTable:
        """The built-ins overridden by the JSON object in ``path`` (or just the built-ins).

        Raises:
            ConfigError: the file is missing, is not JSON, or an entry has a wrong field.
        """
        if path is None:
            return cls()
        try:
            raw = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"--prices {path}: cannot read the file ({exc.strerror})") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--prices {path}: not valid JSON ({exc})") from exc
        if not isinstance(raw, dict):
            raise ConfigError(
                f'--prices {path}: expected an object like {{"MODEL": {{"input": 3, "output": 15}}}}'
            )
        prices: dict[str, Price] = {}
        for key, entry in raw.items():
            try:
                prices[key] = Price.model_validate(entry)
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                where = ".".join(str(part) for part in (key, *first["loc"]))
                raise ConfigError(
                    f"--prices {path}: field '{where}': {first['msg']} "
                    "(each entry holds input, output and optionally cache_read, cache_write "
                    "in USD per million tokens)"
                ) from exc
        return cls(prices)

    def lookup(self, backend: str, model: str) -> Price | None:
        """The price of ``backend:model``, or None if no entry matches. ``sim`` is free."""
        if backend == "sim":
            return FREE
        if (backend, model) not in self._found:
            self._found[backend, model] = self._match(backend, model)
        return self._found[backend, model]

    def _match(self, backend: str, model: str) -> Price | None:
        for name in (f"{backend}:{model}", model):
            best = max(
                (key for key in self._prices if name == key or name.startswith(key + "-")),
                key=len,
                default=None,
            )
            if best is not None:
                return self._prices[best]
        return None


class Budget:
    """The run's spending limit, kept by reservation so concurrent calls cannot overshoot it.

    Before a call the gateway reserves the call's ceiling (its estimated input plus
    ``max_tokens`` of output). A call that would fit the limit were it not for what calls in
    flight hold waits for them to settle (they usually give most of it back); a call that
    cannot fit even then is refused, which stops the run. When a call returns, its
    reservation is replaced by its real cost. The limit can only be passed by a call whose
    input the estimate undercounted, so a run ends within one call's cost of its budget.

    Args:
        limit_usd: the most the run may spend, in USD.
        spent_usd: what the run already spent (in earlier invocations, when resuming).
    """

    def __init__(self, limit_usd: float, *, spent_usd: float = 0.0):
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.reserved_usd = 0.0
        self._holders = 0
        self._waiters: list[asyncio.Future[None]] = []

    async def reserve(self, amount_usd: float) -> float:
        """Hold ``amount_usd`` for a call about to start; return the amount held.

        Raises:
            BackendError: kind ``budget`` when the call might take the run over its limit
                even after every call in flight has settled.
        """
        while True:
            if self.spent_usd + amount_usd > self.limit_usd:
                raise BackendError(
                    f"limit ${self.limit_usd:.4f} reached: ${self.spent_usd:.4f} spent, and the "
                    f"next call may cost up to ${amount_usd:.4f}",
                    kind="budget",
                )
            if self.spent_usd + self.reserved_usd + amount_usd <= self.limit_usd:
                self.reserved_usd += amount_usd
                self._holders += 1
                return amount_usd
            # Only reachable while some call holds a reservation, and that call will settle.
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def settle(self, reserved_usd: float, actual_usd: float) -> None:
        """Replace a reservation by what the call really cost (0 for a failed attempt)."""
        self._holders -= 1
        # Reset exactly when nobody holds anything, so float residue cannot block a waiter.
        self.reserved_usd = max(0.0, self.reserved_usd - reserved_usd) if self._holders else 0.0
        self.spent_usd += actual_usd
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
