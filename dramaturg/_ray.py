"""The Ray executor: a run's episodes in batches on a Ray cluster, one corpus in the store.

The driver (the process that runs ``dramaturg run``) keeps everything a local run keeps: it
registers the run, is the store's only writer and prints the summary. Only performing moves:
the episodes still to do go out in batches, one Ray task each, and every task runs the same
episode code as a local run (``_run._episode``) with a gateway of its own, writing to a shard
(see :mod:`dramaturg._shards`). The driver brings each finished shard into the store in one
transaction. ``--concurrency`` is per task; the run's ``--rpm``, ``--tpm`` and budget are
split into fair shares, one per task running at once, so together they keep the run's limits.

A killed worker costs its calls in flight: Ray runs the batch again (``max_retries``) and the
new attempt replays what the dead one was answered from its shard. A killed driver takes its
tasks with it (Ray stops a dead driver's tasks); ``dramaturg resume`` brings in what their
shards hold before it decides what is left to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

from dramaturg._config import RunConfig
from dramaturg._errors import ConfigError, DramaturgError, StoreError
from dramaturg._gateway import Gateway
from dramaturg._health import RoleHealth
from dramaturg._limits import CircuitBreaker, ModelLimiters, RateLimiter
from dramaturg._model import GenerationParams, RateLimits
from dramaturg._pricing import Budget, PriceTable
from dramaturg._run import (
    EpisodeRecord,
    RunSummary,
    _backends,
    _Job,
    _review_settings,
    _Stage,
    perform,
    prepare,
)
from dramaturg._shards import (
    CACHE_FILE,
    CallCache,
    ShardWriter,
    export_call_cache,
    ingest_leftover_shards,
    ingest_shard,
    remove_shard,
    shard_folder,
)
from dramaturg.backends import close_backends
from dramaturg.evaluators import CheckRunner, CheckSuite, ForkedCheckRunner
from dramaturg.memory import Store, StoreWriter
from dramaturg.scenarios import LoadedScenario

__all__ = [
    "Batch",
    "BatchOutcome",
    "RayRun",
    "ShareOfLimiter",
    "perform_batch",
    "perform_on_ray",
    "require_ray",
]

# The environment the backends read (keys and endpoints). A task runs in its worker's
# environment, so the driver's values go with each task, in its arguments: not through Ray's
# runtime_env, whose agent writes the variables it sets into the cluster's logs.
FORWARDED_ENV = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
)
# How often Ray runs a batch again after its worker died (a system failure, not an error in
# the episode code: those fail the episode, as in a local run).
MAX_RETRIES = 3
# Each task performs up to this many times --concurrency episodes: enough that its
# performers stay busy, few enough that progress (and a resume's loss) moves in small steps.
_BATCH_ROUNDS = 2
_OPEN_ATTEMPTS = 40  # 2 s
# After the last batch, or at a stop, how long a cancelled task's shard may stay held
# before it is left for the next invocation.
_LEFTOVER_WAIT_S = 15.0


def require_ray() -> Any:
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "--executor ray needs Ray, an optional extra: pip install 'dramaturg[ray]'"
        ) from exc
    return ray


class ShareOfLimiter(RateLimiter):
    """One task's limiter: its fair share of the run's limits, also of those it learns.

    A provider's rate-limit headers name the limit of the key, which every task of the run
    shares; a task that adopted it whole would, with the others, send ``shares`` times too
    much. So what the headers say is divided like the configured limits.
    """

    def __init__(
        self,
        *,
        shares: int,
        rpm: float | None = None,
        tpm: float | None = None,
        label: str | None = None,
        learned: list[str] | None = None,
    ) -> None:
        super().__init__(rpm=rpm, tpm=tpm, label=label, learned=learned)
        self.shares = shares

    def _share(self, limits: RateLimits | None) -> RateLimits | None:
        if limits is None:
            return None
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        return replace(
            limits,
            requests_per_minute=rpm / self.shares if rpm else rpm,
            tokens_per_minute=tpm / self.shares if tpm else tpm,
        )

    def observe(self, limits: RateLimits | None) -> None:
        super().observe(self._share(limits))

    def rejected(
        self, granted_at: float, retry_after: float, limits: RateLimits | None = None, *, tokens: int = 0
    ) -> None:
        super().rejected(granted_at, retry_after, self._share(limits), tokens=tokens)


@dataclass(frozen=True, slots=True)
class Batch:
    """What one Ray task performs: some episodes of a run, with its share of the limits."""

    number: int
    config: RunConfig
    run_id: str
    folder: str  # the run's shard folder (shared by every node)
    episodes: tuple[tuple[str, int, int, str], ...]  # (scenario, index, seed, episode id)
    rpm: float | None
    tpm: float | None
    shares: int  # tasks that may run at once: each gets this share of the run's limits
    budget_usd: float | None
    prices: PriceTable  # read by the driver: a --prices file need not exist on the workers
    environment: dict[str, str] = field(default_factory=dict, repr=False)  # may hold API keys


@dataclass(slots=True)
class BatchOutcome:
    """What a task hands back: its shard, and the counters and records of its episodes."""

    shard: str
    summary: RunSummary
    records: list[EpisodeRecord]


def perform_batch(batch: Batch) -> BatchOutcome:
    """The body of a Ray task: perform a batch into a fresh shard, on its own event loop.

    The driver's keys and endpoints are this process's environment while the task runs (the
    SDKs read them, and error messages are scrubbed of them), and are taken back after.
    """
    saved = {name: os.environ.get(name) for name in batch.environment}
    os.environ.update(batch.environment)
    try:
        return asyncio.run(_perform_batch(batch))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def _perform_batch(batch: Batch) -> BatchOutcome:
    config = batch.config
    loaded, models = prepare(config)
    scenarios = {item.scenario.name: item for item in loaded}
    backends = _backends(models, config)
    folder = Path(batch.folder)
    # A fresh file per attempt: a retried batch never opens a dead attempt's shard for writing,
    # it reads the dead attempt's answers through the cache.
    shard = folder / f"b{batch.number:05d}-{uuid.uuid4().hex[:8]}.duckdb"
    store = _open_shard(shard)
    cache = CallCache.load(folder, own=shard)
    writer = ShardWriter(store, cache)
    check_runner = ForkedCheckRunner()
    summary = RunSummary(run_id=batch.run_id, db=str(shard))
    health = RoleHealth(models.for_role)
    summary.health = health
    records: list[EpisodeRecord] = []
    try:
        gateway = Gateway(
            backends,
            writer,
            run_id=batch.run_id,
            concurrency=config.limits.concurrency,
            jitter_seed=config.seed + batch.number,
            limiters=ModelLimiters(
                partial(ShareOfLimiter, shares=batch.shares, rpm=batch.rpm, tpm=batch.tpm)
            ),
            breaker=CircuitBreaker(),
            prices=batch.prices,
            budget=Budget(batch.budget_usd) if batch.budget_usd is not None else None,
            timeout_s=config.limits.timeout_s,
        )
        summary.calls = gateway.stats
        params = GenerationParams(temperature=config.models.temperature, max_tokens=config.models.max_tokens)
        stop = asyncio.Event()
        jobs = _jobs(batch, scenarios, check_runner)

        await perform(
            jobs,
            min(config.limits.concurrency, len(batch.episodes)),
            _Stage(
                writer,
                gateway,
                models,
                params,
                batch.run_id,
                summary,
                stop,
                health,
                config.review.turn_attempts,
            ),
            records.append,
        )
    finally:
        check_runner.close()
        await close_backends(backends)
        writer.close()
        store.close()
        cache.close()
    return BatchOutcome(str(shard), summary, records)


def _open_shard(path: Path) -> Store:
    """A new shard. Another task reading the folder's shards for its cache (or the driver
    checking which are held) may hold the fresh file for an instant: try again, briefly."""
    attempts = 0
    while True:
        try:
            return Store.open(path)
        except StoreError as exc:
            attempts += 1
            held = "held by" in str(exc) or "in use" in str(exc)
            if not held or attempts >= _OPEN_ATTEMPTS:
                raise
            time.sleep(0.05)


def _jobs(batch: Batch, scenarios: dict[str, LoadedScenario], check_runner: CheckRunner) -> Iterator[_Job]:
    """The batch's episodes as the driver made them (seed, id), with this worker's scenarios."""
    config = batch.config
    suites = {
        name: CheckSuite(tuple(item.scenario.checks), item.scenario.check_timeout_s, check_runner)
        for name, item in scenarios.items()
    }
    for name, index, seed, episode_id in batch.episodes:
        yield _Job(
            loaded=scenarios[name],
            index=index,
            seed=seed,
            episode_id=episode_id,
            review=_review_settings(config, scenarios[name]),
            checks=suites[name],
            run_seed=config.seed,
        )


@dataclass(slots=True)
class RayRun:
    """The driver's side of a run on Ray: what ``run`` hands over instead of performing."""

    config: RunConfig
    run_id: str
    db: str | Path
    writer: StoreWriter
    summary: RunSummary
    prior_cost_usd: float = 0.0
    on_episode: Callable[[EpisodeRecord], None] | None = None
    # Per dispatched task: the budget it may spend (None without a budget).
    _held: dict[int, float] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        if str(self.db) == ":memory:" and not self.config.execution.shard_dir:
            raise ConfigError("--executor ray with an in-memory store needs --shard-dir")
        return shard_folder(self.db, self.run_id, self.config.execution.shard_dir)


async def perform_on_ray(ray_run: RayRun, jobs: Iterator[_Job], todo: int) -> None:
    """Perform ``jobs`` on the Ray cluster and bring every shard into the store.

    Connects to ``config.execution.ray_address`` (None: ``RAY_ADDRESS``, the cluster last
    started on this machine, or a new local one), unless this process is connected already.

    Raises:
        ConfigError: Ray is not installed, or the cluster has no CPU to run a task on.
        DramaturgError: an error a task raised that is the user's to fix (a scenario file
            missing on a worker node, say), as the task raised it.
    """
    ray = require_ray()
    folder = ray_run.folder
    folder.mkdir(parents=True, exist_ok=True)
    connected_here = not ray.is_initialized()
    if connected_here:
        ray.init(
            address=ray_run.config.execution.ray_address,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    in_flight: dict[asyncio.Future[BatchOutcome], tuple[Any, int]] = {}
    ended = False
    try:
        slots = int(ray.cluster_resources().get("CPU", 0))
        if slots < 1:
            raise ConfigError(
                "the Ray cluster has no CPU to run episodes on: start worker nodes with "
                "`ray start --address HEAD:PORT --num-cpus N`"
            )
        await ray_run.writer.run(export_call_cache, ray_run.writer.store, folder / CACHE_FILE)
        task = ray.remote(perform_batch).options(num_cpus=1, max_retries=MAX_RETRIES)
        prices = PriceTable.from_file(ray_run.config.limits.prices)
        batches = _batches(jobs, _batch_size(todo, slots, ray_run.config.limits.concurrency))
        number = 0
        while True:
            while not ray_run.summary.stopped and len(in_flight) < slots:
                episodes = next(batches, None)
                if episodes is None:
                    break
                number += 1
                batch = _batch(ray_run, number, episodes, slots, len(in_flight), prices)
                ref = task.remote(batch)
                in_flight[asyncio.wrap_future(ref.future())] = (ref, number)
            if not in_flight:
                break
            done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                _, finished = in_flight.pop(future)
                ray_run._held.pop(finished, None)
                outcome = _outcome(ray, future, finished, ray_run.summary)
                if outcome is not None:
                    await _bring_in(ray_run, outcome)
            if ray_run.summary.stopped:
                _cancel(ray, in_flight)
        ended = True
    finally:
        _cancel(ray, in_flight)
        # Shards of cancelled or killed attempts: their calls were paid for, and a finished
        # episode among them need not be performed again. Interrupted (Ctrl-C, an error), the
        # run does not wait for cancelled tasks to let go of theirs: a resume brings them in.
        wait_s = _LEFTOVER_WAIT_S if ended else 0.0
        left = await ingest_leftover_shards(ray_run.writer, folder, wait_s=wait_s)
        ray_run.summary.done += sum(status == "done" for status in left.episodes.values())
        ray_run.summary.failed += sum(status == "failed" for status in left.episodes.values())
        ray_run.summary.calls.include(left.stats)  # what killed attempts paid for
        with contextlib.suppress(FileNotFoundError):
            (folder / CACHE_FILE).unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: a shard still held stays for the next invocation
            if not ray_run.config.execution.shard_dir:
                folder.parent.rmdir()  # <db>.shards, when no other run has shards in it
        if connected_here:
            ray.shutdown()


def _batch_size(todo: int, slots: int, concurrency: int) -> int:
    """Episodes per task: rounds of equal batches, so no worker idles through the last one."""
    most = max(1, _BATCH_ROUNDS * concurrency)
    rounds = max(1, math.ceil(todo / (slots * most)))
    return max(1, math.ceil(todo / (rounds * slots)))


def _batches(jobs: Iterator[_Job], size: int) -> Iterator[tuple[tuple[str, int, int, str], ...]]:
    """The jobs in batches, made as they are dispatched (a run of 10⁸ episodes starts at once)."""
    described = ((job.loaded.scenario.name, job.index, job.seed, job.episode_id) for job in jobs)
    while chunk := tuple(islice(described, size)):
        yield chunk


def _batch(
    ray_run: RayRun,
    number: int,
    episodes: tuple[tuple[str, int, int, str], ...],
    slots: int,
    running: int,
    prices: PriceTable,
) -> Batch:
    """Batch ``number``, with its fair share of the run's limits.

    Rate limits: one share per task that may run at once. Budget: what is left of it (after
    what earlier invocations and finished tasks spent, and what running tasks may still
    spend) split among the free slots, so the tasks together can never overspend it.
    """
    limits = ray_run.config.limits
    budget = None
    if limits.budget_usd is not None:
        spent = ray_run.prior_cost_usd + ray_run.summary.calls.cost_usd
        left = limits.budget_usd - spent - sum(ray_run._held.values())
        budget = max(0.0, left / max(1, slots - running))
        ray_run._held[number] = budget
    return Batch(
        number=number,
        config=ray_run.config,
        run_id=ray_run.run_id,
        folder=str(ray_run.folder),
        episodes=episodes,
        rpm=limits.rpm / slots if limits.rpm else None,
        tpm=limits.tpm / slots if limits.tpm else None,
        shares=slots,
        prices=prices,
        budget_usd=budget,
        environment={name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)},
    )


def _outcome(
    ray: Any, future: asyncio.Future[BatchOutcome], number: int, summary: RunSummary
) -> BatchOutcome | None:
    """A task's outcome; None when Ray gave up on it (the run stops, resumable)."""
    try:
        return future.result()
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, DramaturgError):
            raise cause from exc
        raise
    except ray.exceptions.RayError as exc:
        if not summary.stopped:
            summary.stopped = (
                f"ray: batch {number} failed after {MAX_RETRIES + 1} attempts "
                f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
            )
        return None


async def _bring_in(ray_run: RayRun, outcome: BatchOutcome) -> None:
    """Ingest a finished task's shard, count what it did, hand over its episodes."""
    shard = Path(outcome.shard)
    await ray_run.writer.run(ingest_shard, ray_run.writer.store, shard)
    remove_shard(shard)
    merge_summary(ray_run.summary, outcome.summary)
    if ray_run.on_episode is not None:
        for record in outcome.records:
            ray_run.on_episode(record)


def _cancel(ray: Any, in_flight: dict[asyncio.Future[BatchOutcome], tuple[Any, int]]) -> None:
    for future, (ref, _) in list(in_flight.items()):
        with contextlib.suppress(Exception):
            ray.cancel(ref)
        future.cancel()
    in_flight.clear()


def merge_summary(into: RunSummary, part: RunSummary) -> None:
    """Add a task's counters to the run's (in place: a live progress page reads them)."""
    into.done += part.done
    into.failed += part.failed
    into.turns += part.turns
    into.pairs += part.pairs
    into.invalid_turn_episodes += part.invalid_turn_episodes
    into.rejected_turns.update(part.rejected_turns)
    into.tool_calls.update(part.tool_calls)
    into.openings.update(part.openings)
    into.eliminated.update(part.eliminated)
    if part.stopped and not into.stopped:
        into.stopped = part.stopped
    into.calls.include(part.calls)
    if into.health is not None and part.health is not None:
        into.health.replies.update(part.health.replies)
        into.health.failures.update(part.health.failures)
        into.health.samples.update(part.health.samples)
