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
what bounds it, and prints dramaturg's calls per second over the plain SDK's: each round runs
both clients back to back (the first alternating), and the median of the rounds' ratios is the
figure, since a shared machine's speed drifts by more than the difference measured.
``--faults`` runs three rounds and prints, next to each client's requests per call, the floor
that round's fault draws set for any client that retries every fault.

Run by hand::

    python bench/throughput.py                   # 600 calls, 200 ms, 600 rpm, concurrency 32
    python bench/throughput.py --faults
    python bench/throughput.py --client-bound    # 9 rounds of 3000 calls, no latency, no limit

Targets (issue 13): dramaturg at >= 0.97 of the limit with <= 1.03 requests per successful
call without faults and <= 1.15 with them, nothing lost; client-bound >= 0.9 of the plain
SDK's calls per second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import openai
from dramaturg.memory import Store, StoreWriter

from dramaturg import GenerationParams, Message, ModelRequest
from dramaturg._gateway import Gateway
from dramaturg._limits import ModelLimiters, RateLimiter
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
    faults: int  # requests the fake answered with an injected fault (500, 503, drop, malformed)

    @property
    def rate(self) -> float:
        return self.completed / self.elapsed_s

    @property
    def requests_per_success(self) -> float:
        return self.requests / max(self.completed, 1)

    @property
    def floor(self) -> float:
        """Requests per success that any client retrying each fault pays for this run's draws."""
        return (self.completed + self.faults) / max(self.completed, 1)


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


async def plain_sdk(args: argparse.Namespace, fake: FakeAPI, calls: int, run: str) -> Timed:
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
        return await _timed([one(i) for i in range(calls)])
    finally:
        await client.close()


async def dramaturg_gateway(args: argparse.Namespace, fake: FakeAPI, calls: int, run: str) -> Timed:
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
            limiters=ModelLimiters(partial(RateLimiter, rpm=None if args.client_bound else args.rpm)),
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
            return await _timed([gateway.complete(request(i)) for i in range(calls)])
        finally:
            await backend.aclose()
            writer.close()
            store.close()


Timed = tuple[int, float]  # calls completed, seconds taken


async def _timed(calls: list[Awaitable[object]]) -> Timed:
    """Run the calls; the clock covers only them, not setting up a client or opening a store."""
    started = time.perf_counter()
    results = await asyncio.gather(*calls, return_exceptions=True)
    elapsed = time.perf_counter() - started
    return sum(not isinstance(result, BaseException) for result in results), elapsed


Client = Callable[[argparse.Namespace, FakeAPI, int, str], Awaitable[Timed]]


def measure(name: str, client: Client, args: argparse.Namespace, fake: FakeAPI, calls: int) -> Measured:
    run = f"{name}-{time.time_ns()}"  # fresh bodies, never answered by the store's cache
    asyncio.run(client(args, fake, 1, f"warm-{run}"))  # import, connect, open the store
    time.sleep(args.window_s + 0.1)  # the warm-up call leaves the window
    fake.reset()
    completed, elapsed = asyncio.run(client(args, fake, calls, run))
    stats = fake.stats()
    faults = sum(count for status, count in stats["by_status"].items() if status in _FAULT_STATUSES)
    return Measured(name, calls, completed, elapsed, stats["requests"], stats["rate_limited"], faults)


_FAULT_STATUSES = frozenset({"500", "503", "529", "drop", "malformed"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=None, help="distinct calls per client and round")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="fake API latency per request")
    parser.add_argument("--rpm", type=float, default=600.0, help="the fake's limit, given to both clients")
    parser.add_argument("--window-s", type=float, default=1.0, help="the fake's sliding window")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight at most, per client")
    parser.add_argument("--faults", action="store_true", help="inject the fault mix (500/529/drop/malformed)")
    parser.add_argument("--client-bound", action="store_true", help="no latency, no limit: the client bounds")
    parser.add_argument("--seed", type=int, default=0, help="seeds the fake's fault draws")
    parser.add_argument(
        "--rounds", type=int, default=0, help="each client once per round (9 client-bound, 3 faults, else 1)"
    )
    args = parser.parse_args()

    calls = args.calls or (3000 if args.client_bound else 600)
    settings: dict[str, object] = {"responder": "echo", "seed": args.seed}
    if args.client_bound:
        settings["latency_ms"] = 0.0
    else:
        settings.update(latency_ms=args.latency_ms, rpm_limit=args.rpm, rate_window_s=args.window_s)
    if args.faults:
        settings.update(FAULT_MIX)
    rounds = args.rounds or (9 if args.client_bound else 3 if args.faults else 1)
    clients: list[tuple[str, Client]] = [("plain", plain_sdk), ("dramaturg", dramaturg_gateway)]
    measured: list[dict[str, Measured]] = []
    with FakeAPI.start(FakeAPIConfig.model_validate(settings)) as fake:
        for index in range(rounds):
            # Each round runs both clients back to back, the first one alternating: a shared
            # machine's speed drifts, and a round's ratio compares like with like.
            order = clients if index % 2 == 0 else clients[::-1]
            measured.append({name: measure(name, client, args, fake, calls) for name, client in order})

    mode = "fault mix: 5% 500, 5% 503, 2% drops, 1% malformed" if args.faults else "no faults"
    if args.client_bound:
        print(f"client-bound: fake latency 0, no rate limit, concurrency {args.concurrency}, {mode}")
        ratios = []
        for index, run in enumerate(measured, 1):
            plain, ours = run["plain"], run["dramaturg"]
            ratios.append(ours.rate / plain.rate)
            print(
                f"round {index}: plain {plain.completed}/{plain.calls} at {plain.rate:6.1f} calls/s, "
                f"dramaturg {ours.completed}/{ours.calls} at {ours.rate:6.1f} calls/s = {ratios[-1]:.3f}"
            )
        print(
            f"dramaturg / plain SDK = {statistics.median(ratios):.3f} (median of {rounds} rounds; "
            f"range {min(ratios):.3f}-{max(ratios):.3f}; target >= 0.9)"
        )
        return
    limit = args.rpm / 60
    print(
        f"fake: {args.rpm:g} rpm as a {args.window_s:g} s sliding window ({limit:g} calls/s), "
        f"latency {args.latency_ms:g} ms; concurrency {args.concurrency}; {mode}"
    )
    for index, run in enumerate(measured, 1):
        for result in run.values():
            line = (
                f"{'round ' + str(index) + ' ' if rounds > 1 else ''}{result.client:<10} "
                f"{result.completed}/{result.calls} calls in {result.elapsed_s:6.2f} s = "
                f"{result.rate / limit:.3f} of the limit; {result.requests} requests "
                f"({result.rate_limited} x 429) = {result.requests_per_success:.3f} per successful call"
            )
            if args.faults:
                line += f" (the draws' floor {result.floor:.3f}: {result.faults} faults)"
            print(line)
    if rounds > 1:
        for name, _ in clients:
            runs = [run[name] for run in measured]
            share = statistics.mean(run.rate / limit for run in runs)
            completed = max(sum(run.completed for run in runs), 1)
            requests = sum(run.requests for run in runs) / completed
            floor = sum(run.completed + run.faults for run in runs) / completed
            lost = sum(run.calls - run.completed for run in runs)
            print(
                f"{name:<10} over {rounds} rounds: {share:.3f} of the limit, {requests:.3f} requests per "
                f"successful call (floor {floor:.3f}), {lost} lost"
            )
    target = 1.15 if args.faults else 1.03
    print(f"targets for dramaturg: >= 0.97 of the limit, <= {target} requests per successful call, none lost")
    if args.faults:
        share = sum(FAULT_MIX.values())
        print(f"(a {share:.0%} fault mix alone costs {1 / (1 - share):.3f} requests per call in expectation)")


if __name__ == "__main__":
    main()
