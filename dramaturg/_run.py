"""The run scheduler: many episodes, bounded concurrency, one writer, resumable."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from dramaturg._episode import RoleModels, perform_episode
from dramaturg._errors import BackendError, ConfigError, RunError
from dramaturg._gateway import Gateway, GatewayStats
from dramaturg._model import Backend, GenerationParams, ModelSpec
from dramaturg.backends import BACKEND_FACTORIES, SimOptions
from dramaturg.memory import EpisodeResult, EpisodeStart, RunRecord, Store, StoreWriter, utcnow
from dramaturg.scenarios import LoadedScenario, load_scenario

__all__ = ["RunConfig", "RunSummary", "episode_seed", "run"]

# Errors that will recur on every call: stop the run instead of failing a thousand episodes.
_FATAL_KINDS = frozenset({"auth", "bad_request", "budget"})


class RunConfig(BaseModel):
    """Everything a run needs. Stored (without secrets) in ``runs.config``.

    Example:
        >>> config = RunConfig(scenarios=["support-refund"], episodes=5)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenarios: list[str] = Field(min_length=1)
    episodes: int = Field(default=10, ge=1, description="episodes per scenario")
    seed: int = 0
    concurrency: int = Field(default=8, ge=1, le=1024)
    model: str = "sim"
    user_model: str | None = None
    assistant_model: str | None = None
    critic_model: str | None = None
    judge_model: str | None = None
    run_id: str | None = None
    temperature: float = Field(default=0.8, ge=0, le=2)
    max_tokens: int = Field(default=1024, ge=1)
    sim_role_flip_rate: float = Field(default=0.0, ge=0, le=1)

    def role_models(self) -> RoleModels:
        known = frozenset(BACKEND_FACTORIES)
        base = ModelSpec.parse(self.model, known_backends=known)

        def pick(spec: str | None) -> ModelSpec:
            return ModelSpec.parse(spec, known_backends=known) if spec else base

        return RoleModels(
            user_simulator=pick(self.user_model),
            assistant=pick(self.assistant_model),
            critic=pick(self.critic_model),
            verifier=pick(self.judge_model),
        )


@dataclass(slots=True)
class RunSummary:
    run_id: str
    db: str
    done: int = 0
    failed: int = 0
    skipped: int = 0  # already done by an earlier invocation of this run
    turns: int = 0
    role_flips: int = 0
    elapsed_s: float = 0.0
    stopped: str | None = None  # why the run stopped early, if it did
    calls: GatewayStats = field(default_factory=GatewayStats)


def episode_seed(run_seed: int, scenario: str, index: int) -> int:
    """The seed of one episode: stable across machines, Python versions and reruns."""
    digest = hashlib.sha256(f"{run_seed}/{scenario}/{index}".encode()).hexdigest()
    return int(digest[:12], 16)


def _dramaturg_version() -> str:
    try:
        return version("dramaturg")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class _Job:
    loaded: LoadedScenario
    index: int
    seed: int
    episode_id: str


def prepare(config: RunConfig) -> tuple[list[LoadedScenario], RoleModels]:
    """Validate everything a run needs before anything is written.

    Raises:
        ScenarioError, ConfigError: one clear line naming what is wrong.
    """
    loaded = [load_scenario(reference) for reference in config.scenarios]
    names = [item.scenario.name for item in loaded]
    if len(set(names)) != len(names):
        raise ConfigError(f"the same scenario is listed twice: {names}")
    return loaded, config.role_models()


def _backends(models: RoleModels, config: RunConfig) -> dict[str, Backend]:
    names = {models.for_role(role).backend for role in ("user_simulator", "assistant", "critic", "verifier")}
    options = SimOptions(role_flip_rate=config.sim_role_flip_rate)
    return {name: BACKEND_FACTORIES[name](sim_options=options) for name in names}


async def run(
    config: RunConfig,
    db: str | Path,
    *,
    on_episode: Callable[[str], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    backends: dict[str, Backend] | None = None,
) -> RunSummary:
    """Perform ``config.episodes`` episodes of each scenario into the store at ``db``.

    Rerunning with the run id of an existing run resumes it: done episodes are skipped and
    unfinished ones replay from the start through the call cache.

    Args:
        on_start: called once with (episodes to perform, episodes already done).
        on_episode: called with each finished episode's status ('done' or 'failed').
        backends: override the backends built from the model specs (tests use this).
    """
    loaded, models = prepare(config)
    run_id = config.run_id or f"run-{utcnow():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    store = Store.open(db)
    writer = StoreWriter(store)
    summary = RunSummary(run_id=run_id, db=str(db))
    started = time.perf_counter()
    try:
        statuses = await _register_run(writer, config, run_id, loaded)
        jobs = [
            _Job(item, index, episode_seed(config.seed, item.scenario.name, index),
                 f"{run_id}/{item.scenario.name}/{index:05d}")
            for item in loaded
            for index in range(config.episodes)
        ]
        todo = [job for job in jobs if statuses.get(job.episode_id) != "done"]
        summary.skipped = len(jobs) - len(todo)
        if on_start:
            on_start(len(todo), summary.skipped)
        gateway = Gateway(
            backends or _backends(models, config),
            writer,
            run_id=run_id,
            concurrency=config.concurrency,
            jitter_seed=config.seed,
        )
        summary.calls = gateway.stats
        params = GenerationParams(temperature=config.temperature, max_tokens=config.max_tokens)
        slots = asyncio.Semaphore(config.concurrency)
        stop = asyncio.Event()

        async def one(job: _Job) -> None:
            async with slots:
                if stop.is_set():
                    return
                status = await _episode(job, writer, gateway, models, params, run_id, summary, stop)
            if on_episode and status:
                on_episode(status)

        tasks = [asyncio.create_task(one(job)) for job in todo]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
    finally:
        summary.elapsed_s = time.perf_counter() - started
        writer.close()
        store.close()
    return summary


async def _register_run(
    writer: StoreWriter, config: RunConfig, run_id: str, loaded: list[LoadedScenario]
) -> dict[str, str]:
    def register() -> dict[str, str]:
        store = writer.store
        if not store.run_exists(run_id):
            with store.transaction():
                store.insert_run(
                    RunRecord(
                        run_id=run_id,
                        created_at=utcnow(),
                        seed=config.seed,
                        config_json=config.model_copy(update={"run_id": run_id}).model_dump_json(),
                        dramaturg_version=_dramaturg_version(),
                    )
                )
                for item in loaded:
                    store.upsert_scenario(run_id, item.scenario.name, item.source, item.scenario.definition())
        return store.episode_statuses(run_id)

    return await writer.run(register)


async def _episode(
    job: _Job,
    writer: StoreWriter,
    gateway: Gateway,
    models: RoleModels,
    params: GenerationParams,
    run_id: str,
    summary: RunSummary,
    stop: asyncio.Event,
) -> str | None:
    spec = job.loaded.scenario.instantiate(job.seed)
    await writer.start_episode(
        EpisodeStart(
            episode_id=job.episode_id,
            run_id=run_id,
            scenario=spec.scenario,
            idx=job.index,
            seed=job.seed,
            persona=spec.persona,
            spec_json=spec.to_json(),
            started_at=utcnow(),
        )
    )
    try:
        outcome = await perform_episode(spec, gateway=gateway, models=models, episode_id=job.episode_id, params=params)
    except BackendError as exc:
        if exc.kind in _FATAL_KINDS:
            # Leave the episode 'running': the run stops and a resume replays it.
            if not stop.is_set():
                summary.stopped = f"{exc.kind}: {exc}"
            stop.set()
            return None
        await _fail(writer, job, exc, summary)
        return "failed"
    except RunError as exc:
        await _fail(writer, job, exc, summary)
        return "failed"
    result = EpisodeResult(
        episode_id=job.episode_id,
        status="done",
        termination_reason=outcome.termination_reason,
        turns=outcome.turns,
        finished_at=utcnow(),
    )
    await writer.finish_episode(result)
    summary.done += 1
    summary.turns += len(outcome.turns)
    summary.role_flips += result.role_flips
    return "done"


async def _fail(writer: StoreWriter, job: _Job, exc: Exception, summary: RunSummary) -> None:
    summary.failed += 1
    await writer.finish_episode(
        EpisodeResult(
            episode_id=job.episode_id,
            status="failed",
            termination_reason="error",
            turns=(),
            finished_at=utcnow(),
            error=f"{type(exc).__name__}: {exc}",
        )
    )
