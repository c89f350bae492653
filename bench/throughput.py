"""Gateway throughput at a provider's rate limit, against a plain-SDK baseline in the same run.

The local fake API enforces ``--rpm`` the way the real APIs do, over a one-second sliding
window (600 rpm: at most 10 requests in any second), answers 429 with ``retry-after-ms``
when the window is full, and sends the providers' rate-limit headers. Two clients make the
same number of distinct calls through the real ``openai`` SDK, one after the other, each
against a fresh window:

- **plain**: ``AsyncOpenAI`` (its own retries, 6 attempts) behind a token bucket of one
  second's worth of requests, what a user writes by hand;
- **dramaturg**: the gateway with its limiter at ``--rpm``, recording every call in a
  throwaway DuckDB store, as in a real run.

Each prints its share of the limit (completed calls per second over ``rpm / 60``) and the
requests the fake received per successful call. ``--faults`` adds the fault mix: 5% 500,
5% 529 (503 on this route), 2% dropped connections, 1% malformed bodies.
``--client-bound`` removes the latency and the limit, so the client's own cost per call is
what bounds it, and prints dramaturg's calls per second against the plain SDK's (the median of
three alternating rounds each).

Run by hand::

    python bench/throughput.py                   # 600 calls, 200 ms, 600 rpm, concurrency 32
    python bench/throughput.py --faults
    python bench/throughput.py --client-bound    # 3000 calls, no latency, no limit

Targets (issue 13): dramaturg at >= 0.97 of the limit with <= 1.03 requests per successful
call without faults and <= 1.15 with them, nothing lost; client-bound >= 0.9 of the plain
SDK's calls per second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import openai
from dramaturg.memory import Store, StoreWriter

from dramaturg import GenerationParams, Message, ModelRequest
from dramaturg._gateway import Gateway
from dramaturg._limits import RateLimiter
from dramaturg.backends import OpenAIBackend
from dramaturg.testing import FakeAPI, FakeAPIConfig

FAULT_MIX = {"rate_500": 0.05, "rate_529": 0.05, "rate_drop": 0.02, "rate_malformed": 0.01}
MODEL = "gpt-bench"


@dataclass(frozen=True, slots=True)
class Measured:
    client: str
    calls: int
    completed: int
    elapsed_s: float
    requests: int
    rate_limited: int

    @property
    def rate(self) -> float:
        return self.completed / self.elapsed_s

    @property
    def requests_per_success(self) -> float:
        return self.requests / max(self.completed, 1)


class TokenBucket:
    """The limiter a user writes next to the plain SDK: ``rate`` tokens a second, holding at
    most one (a fuller bucket sends bursts a sliding window refuses)."""

    def __init__(self, rate: float):
        self.rate = rate
        self.tokens = 1.0
        self.updated = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self) -> None:
        async with self.lock:
            while True:
                now = time.monotonic()
                self.tokens = min(1.0, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


def prompt(index: int, run: str) -> str:
    return f"{run} request {index}"


async def plain_sdk(args: argparse.Namespace, fake: FakeAPI, calls: int, run: str) -> int:
    client = openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="bench-key", max_retries=5)
    bucket = TokenBucket(args.rpm / 60) if not args.client_bound else None
    slots = asyncio.Semaphore(args.concurrency)

    async def one(index: int) -> None:
        async with slots:
            if bucket is not None:
                await bucket.take()
            await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": prompt(index, run)}],
                temperature=0.0,
                max_tokens=32,
            )

    try:
        return await _completed([one(i) for i in range(calls)])
    finally:
        await client.close()


async def dramaturg_gateway(args: argparse.Namespace, fake: FakeAPI, calls: int, run: str) -> int:
    os.environ["OPENAI_BASE_URL"] = fake.openai_base_url
    os.environ["OPENAI_API_KEY"] = "bench-key"
    backend = OpenAIBackend(timeout_s=30)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.duckdb")
        writer = StoreWriter(store)
        gateway = Gateway(
            {"openai": backend},
            writer,
            concurrency=args.concurrency,
            limiter=RateLimiter(rpm=None if args.client_bound else args.rpm),
        )

        def request(index: int) -> ModelRequest:
            return ModelRequest(
                backend="openai",
                model=MODEL,
                role="assistant",
                system="",
                messages=(Message("user", prompt(index, run)),),
                params=GenerationParams(temperature=0.0, max_tokens=32),
            )

        try:
            return await _completed([gateway.complete(request(i)) for i in range(calls)])
        finally:
            await backend.aclose()
            writer.close()
            store.close()


async def _completed(calls: list[Awaitable[object]]) -> int:
    results = await asyncio.gather(*calls, return_exceptions=True)
    return sum(not isinstance(result, BaseException) for result in results)


Client = Callable[[argparse.Namespace, FakeAPI, int, str], Awaitable[int]]


def measure(name: str, client: Client, args: argparse.Namespace, fake: FakeAPI, calls: int) -> Measured:
    run = f"{name}-{time.time_ns()}"  # fresh bodies, never answered by the store's cache
    asyncio.run(client(args, fake, 1, f"warm-{run}"))  # import, connect, open the store
    time.sleep(args.window_s + 0.1)  # the warm-up call leaves the window
    fake.reset()
    started = time.perf_counter()
    completed = asyncio.run(client(args, fake, calls, run))
    elapsed = time.perf_counter() - started
    stats = fake.stats()
    return Measured(name, calls, completed, elapsed, stats["requests"], stats["rate_limited"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=None, help="distinct calls per client")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="fake API latency per request")
    parser.add_argument("--rpm", type=float, default=600.0, help="the fake's limit, given to both clients")
    parser.add_argument("--window-s", type=float, default=1.0, help="the fake's sliding window")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight at most, per client")
    parser.add_argument("--faults", action="store_true", help="inject the fault mix (500/529/drop/malformed)")
    parser.add_argument("--client-bound", action="store_true", help="no latency, no limit: the client bounds")
    parser.add_argument("--seed", type=int, default=0, help="seeds the fake's fault draws")
    parser.add_argument("--rounds", type=int, default=0, help="alternating rounds (3 client-bound, else 1)")
    args = parser.parse_args()

    calls = args.calls or (3000 if args.client_bound else 600)
    settings: dict[str, object] = {"responder": "echo", "seed": args.seed}
    if args.client_bound:
        settings["latency_ms"] = 0.0
    else:
        settings.update(latency_ms=args.latency_ms, rpm_limit=args.rpm, rate_window_s=args.window_s)
    if args.faults:
        settings.update(FAULT_MIX)
    rounds = args.rounds or (3 if args.client_bound else 1)
    with FakeAPI.start(FakeAPIConfig.model_validate(settings)) as fake:
        # Alternating rounds, each client's median by rate: a busy machine moves single runs.
        measured: dict[str, list[Measured]] = {"plain": [], "dramaturg": []}
        for _ in range(rounds):
            measured["plain"].append(measure("plain", plain_sdk, args, fake, calls))
            measured["dramaturg"].append(measure("dramaturg", dramaturg_gateway, args, fake, calls))
        results = [sorted(runs, key=lambda run: run.rate)[len(runs) // 2] for runs in measured.values()]
        if rounds > 1:
            for name, runs in measured.items():
                print(f"{name:<10} rounds: " + ", ".join(f"{run.rate:.1f}" for run in runs) + " calls/s")

    mode = "fault mix: 5% 500, 5% 503, 2% drops, 1% malformed" if args.faults else "no faults"
    if args.client_bound:
        print(f"client-bound: fake latency 0, no rate limit, concurrency {args.concurrency}, {mode}")
        for result in results:
            print(
                f"{result.client:<10} {result.completed}/{result.calls} calls in {result.elapsed_s:6.2f} s"
                f" = {result.rate:7.1f} calls/s"
            )
        plain, ours = results
        print(f"dramaturg / plain SDK = {ours.rate / plain.rate:.3f} (target >= 0.9)")
        return
    limit = args.rpm / 60
    print(
        f"fake: {args.rpm:g} rpm as a {args.window_s:g} s sliding window ({limit:g} calls/s), "
        f"latency {args.latency_ms:g} ms; concurrency {args.concurrency}; {mode}"
    )
    for result in results:
        print(
            f"{result.client:<10} {result.completed}/{result.calls} calls in {result.elapsed_s:6.2f} s"
            f" = {result.rate:5.2f} calls/s = {result.rate / limit:.3f} of the limit; "
            f"{result.requests} requests ({result.rate_limited} x 429) = "
            f"{result.requests_per_success:.3f} per successful call"
        )
    target = 1.15 if args.faults else 1.03
    print(f"targets for dramaturg: >= 0.97 of the limit, <= {target} requests per successful call, none lost")


if __name__ == "__main__":
    main()
