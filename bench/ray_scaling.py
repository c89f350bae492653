"""Episodes per second on a Ray cluster of 1 and 2 worker nodes, against the fake API at 200 ms.

A run is bound by the model's latency, not the CPU: each call waits 200 ms at the local
fake API (which plays the sim behind the real ``openai`` SDK), and each worker keeps
``--concurrency`` episodes in flight. With two workers twice as many calls wait at once, so
episodes per second should nearly double; the ratio printed is 2 workers over 1.

The cluster is a real one on 127.0.0.1 (``ray start`` processes, stopped by PID): a head and
one worker node, then a second worker node added. Before each measurement a warm-up run
gives every worker its imports (a fresh Ray worker spends seconds importing the SDKs), so
the timed runs measure performing, not starting. Each run writes a fresh store, so nothing
is answered from the call cache.

Run by hand::

    python bench/ray_scaling.py                    # 24 episodes, concurrency 4 per worker
    python bench/ray_scaling.py --episodes 40 --concurrency 6
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import ray

from dramaturg import ExecutionOptions, LimitOptions, ModelOptions, ReviewOptions, RunConfig, run_sync
from dramaturg.testing import FakeAPI, FakeAPIConfig, LocalRayCluster


def config(fake: FakeAPI, *, episodes: int, concurrency: int, seed: int, run_id: str) -> RunConfig:
    """support-refund and math-tutor, half the episodes each, every role on the fake API."""
    return RunConfig(
        scenarios=["support-refund", "math-tutor"],
        episodes=max(1, episodes // 2),
        seed=seed,
        run_id=run_id,
        models=ModelOptions(model="openai:gpt-bench", base_url=fake.openai_base_url),
        review=ReviewOptions(best_of_n=0),
        limits=LimitOptions(concurrency=concurrency),
        execution=ExecutionOptions(executor="ray"),
    )


def measure(fake: FakeAPI, folder: Path, workers: int, episodes: int, concurrency: int) -> tuple[float, int]:
    """(episodes per second, requests the fake answered) of one timed run on ``workers`` workers."""
    warm = config(fake, episodes=2 * workers, concurrency=concurrency, seed=1000 + workers, run_id="warm")
    run_sync(warm, folder / f"warm-{workers}.duckdb")
    fake.reset()
    timed = config(fake, episodes=episodes, concurrency=concurrency, seed=workers, run_id=f"timed-{workers}")
    summary = run_sync(timed, folder / f"timed-{workers}.duckdb")
    if summary.stopped or summary.failed or summary.done != 2 * (episodes // 2):
        raise SystemExit(f"the run on {workers} workers did not finish cleanly: {summary}")
    return summary.done / summary.elapsed_s, fake.stats()["answered_200"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=24, help="episodes per timed run (default 24)")
    parser.add_argument("--concurrency", type=int, default=4, help="episodes in flight per worker")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "bench-key")
    results: dict[int, tuple[float, int]] = {}
    with tempfile.TemporaryDirectory(prefix="pt_ray_bench-") as scratch:
        folder = Path(scratch)
        with (
            FakeAPI.start(FakeAPIConfig(responder="sim", latency_ms=args.latency_ms)) as fake,
            LocalRayCluster.start(workers=1, root=folder / "cluster") as cluster,
        ):
            ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
            try:
                results[1] = measure(fake, folder, 1, args.episodes, args.concurrency)
                cluster.add_worker()
                results[2] = measure(fake, folder, 2, args.episodes, args.concurrency)
            finally:
                ray.shutdown()
    print(
        f"fake API latency {args.latency_ms:g} ms, {args.episodes} episodes per run "
        f"(support-refund, math-tutor), concurrency {args.concurrency} per worker"
    )
    for workers, (rate, calls) in results.items():
        print(f"workers {workers}   {rate:6.3f} episodes/s   ({calls} requests answered)")
    print(f"ratio   {results[2][0] / results[1][0]:.2f} (2 workers / 1)")


if __name__ == "__main__":
    main()
