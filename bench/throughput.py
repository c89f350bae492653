"""Gateway throughput against the local fake API, through the real anthropic SDK.

Measures completed calls per second against the theoretical limit of the same run,
``min(rpm / 60, concurrency / latency)``, and prints the ratio (target >= 0.97). With
``--faults`` the fake also fails 5% of requests with 500, 5% with 529, drops 2% of
connections and garbles 1% of bodies; the bench then prints how many requests were sent per
successful call (target <= 1.2).

Run by hand::

    .venv/bin/python bench/throughput.py                  # 200 ms, 600 rpm, concurrency 32
    .venv/bin/python bench/throughput.py --faults
    .venv/bin/python bench/throughput.py --rpm 6000 --concurrency 8

Calls are recorded in a throwaway DuckDB file, as in a real run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

from dramaturg.memory import Store, StoreWriter

from dramaturg import GenerationParams, Message, ModelRequest
from dramaturg._gateway import Gateway
from dramaturg._limits import RateLimiter
from dramaturg.backends import AnthropicBackend
from dramaturg.testing import FakeAPI, FakeAPIConfig

FAULT_MIX = {"rate_500": 0.05, "rate_529": 0.05, "rate_drop": 0.02, "rate_malformed": 0.01}


def request(index: int, run: str) -> ModelRequest:
    return ModelRequest(
        backend="anthropic",
        model="claude-bench",
        role="assistant",
        system="You are a benchmark.",
        messages=(Message("user", f"{run} request {index}"),),
        params=GenerationParams(temperature=0.0, max_tokens=32),
    )


async def measure(args: argparse.Namespace, fake: FakeAPI, db: Path) -> dict[str, float]:
    backend = AnthropicBackend(timeout_s=30)
    store = Store.open(db)
    writer = StoreWriter(store)
    run = f"run-{time.time_ns()}"  # fresh bodies, never answered by the cache
    try:
        await backend.complete(request(-1, run))  # warm up the SDK and a connection
        fake.reset()
        gateway = Gateway(
            {"anthropic": backend},
            writer,
            concurrency=args.concurrency,
            limiter=RateLimiter(rpm=args.rpm),
        )
        limit = min(args.rpm / 60, args.concurrency / (args.latency_ms / 1000))
        calls = max(1, round(limit * args.seconds))
        started = time.perf_counter()
        results = await asyncio.gather(
            *(gateway.complete(request(i, run)) for i in range(calls)), return_exceptions=True
        )
        elapsed = time.perf_counter() - started
    finally:
        await backend.aclose()
        writer.close()
        store.close()
    failed = [r for r in results if isinstance(r, BaseException)]
    stats = fake.stats()
    completed = calls - len(failed)
    return {
        "calls": calls,
        "completed": completed,
        "gave_up": len(failed),
        "elapsed": elapsed,
        "rate": completed / elapsed,
        "limit": limit,
        "requests": stats["requests"],
        "max_in_flight": stats["max_in_flight"],
        "retries": gateway.stats.retries,
        **{f"error:{kind}": n for kind, n in Counter(gateway.stats.errors_by_kind).items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=200.0, help="fake API latency per request")
    parser.add_argument("--rpm", type=float, default=600.0, help="the gateway's requests-per-minute limit")
    parser.add_argument("--concurrency", type=int, default=32, help="the gateway's concurrency bound")
    parser.add_argument("--seconds", type=float, default=20.0, help="about how long to run")
    parser.add_argument("--faults", action="store_true", help="inject the fault mix (500/529/drop/malformed)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the fake's fault draws")
    args = parser.parse_args()

    faults = FAULT_MIX if args.faults else {}
    config = FakeAPIConfig.model_validate(
        {"responder": "echo", "latency_ms": args.latency_ms, "seed": args.seed, **faults}
    )
    with FakeAPI.start(config) as fake, tempfile.TemporaryDirectory() as tmp:
        os.environ["ANTHROPIC_BASE_URL"] = fake.anthropic_base_url
        os.environ["ANTHROPIC_API_KEY"] = "bench-key"
        result = asyncio.run(measure(args, fake, Path(tmp) / "bench.duckdb"))

    mode = "fault mix 5% 500, 5% 529, 2% drops, 1% malformed" if args.faults else "no faults"
    print(f"fake latency {args.latency_ms:g} ms, rpm {args.rpm:g}, concurrency {args.concurrency}, {mode}")
    print(
        f"completed {result['completed']:.0f}/{result['calls']:.0f} calls in {result['elapsed']:.2f} s "
        f"= {result['rate']:.2f} calls/s (max in flight at the fake: {result['max_in_flight']:.0f})"
    )
    print(
        f"theoretical limit min(rpm/60, concurrency/latency) = "
        f"min({args.rpm / 60:.2f}, {args.concurrency / (args.latency_ms / 1000):.2f}) "
        f"= {result['limit']:.2f} calls/s"
    )
    print(f"ratio {result['rate'] / result['limit']:.3f} (target >= 0.97 without faults)")
    if args.faults:
        errors = ", ".join(
            f"{k.split(':', 1)[1]} {v:.0f}" for k, v in result.items() if k.startswith("error:")
        )
        per_success = result["requests"] / max(result["completed"], 1)
        print(
            f"requests sent {result['requests']:.0f} for {result['completed']:.0f} successful calls "
            f"= {per_success:.3f} per success (target <= 1.2); failed attempts: {errors or 'none'}; "
            f"calls given up: {result['gave_up']:.0f}"
        )


if __name__ == "__main__":
    main()
