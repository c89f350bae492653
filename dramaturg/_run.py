"""The run scheduler: many episodes, bounded concurrency, one writer, resumable."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dramaturg._config import RunConfig
from dramaturg._episode import RoleModels, perform_episode
from dramaturg._errors import BackendError, ConfigError, RunError
from dramaturg._gateway import Gateway, GatewayStats
from dramaturg._health import RoleFailing, RoleHealth, record_health_metrics
from dramaturg._limits import CircuitBreaker, ModelLimiters, RateLimiter
from dramaturg._model import Backend, GenerationParams
from dramaturg._openings import Beginning, begin_episode, replay_for_spin
from dramaturg._pricing import Budget, PriceTable
from dramaturg._review import PairReport, ReviewSettings, pair_report
from dramaturg._shards import ingest_leftover_shards, shard_folder
from dramaturg._toolbox import ToolBox
from dramaturg.agents import ToolSimulator
from dramaturg.backends import BACKEND_FACTORIES, SimOptions, close_backends
from dramaturg.evaluators import CheckRunner, CheckSuite, ForkedCheckRunner
from dramaturg.memory import (
    EpisodeResult,
    EpisodeStart,
    PairRow,
    RunRecord,
    Store,
    StoreWriter,
    TurnRecord,
    utcnow,
)
from dramaturg.scenarios import OBJECT_PREFIX, LoadedScenario, SpinDialogues, load_scenario

__all__ = [
    "EpisodeRecord",
    "LiveRun",
    "RunConfig",
    "RunProgress",
    "RunSummary",
    "episode_seed",
    "load_run_config",
    "new_run_id",
    "prepare",
    "run",
    "run_sync",
]

# Errors that will recur on every call: stop the run instead of failing a thousand episodes.
_FATAL_KINDS = frozenset({"auth", "bad_request", "budget", "circuit_open"})


@dataclass(frozen=True, slots=True)
class EpisodeRecord:
    """One finished episode, as ``run(on_episode=...)`` hands it over.

    Attributes:
        status: 'done' or 'failed'.
        termination_reason: why the dialogue ended ('terminal_stage', 'user_ended', ...), or
            'error' for a failed episode (``error`` says what failed).
        turns: the dialogue as stored (role, content, origin, ...).
        pairs: the preference pairs it produced.
    """

    episode_id: str
    scenario: str
    status: str
    termination_reason: str
    turns: tuple[TurnRecord, ...]
    pairs: tuple[PairRow, ...]
    error: str | None = None

    @classmethod
    def of(cls, result: EpisodeResult, scenario: str) -> EpisodeRecord:
        pairs = tuple(result.review.pairs) if result.review else ()
        return cls(
            result.episode_id,
            scenario,
            result.status,
            result.termination_reason,
            result.turns,
            pairs,
            result.error,
        )


@dataclass(slots=True)
class LiveRun:
    """A run while it goes: what a progress report or a live viewer reads.

    Attributes:
        summary: counters of this invocation, growing as episodes finish.
        writer: the store's single writer; reads go through it too while the run holds the store.
        total: episodes this invocation performs (known once the run starts).
        closers: awaited, in order, when the run ends, before the store closes.
        started: when it started (``time.monotonic``).
    """

    summary: RunSummary
    writer: StoreWriter
    total: int = 0
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def progress(self) -> RunProgress:
        """Where the run stands now."""
        summary, calls = self.summary, self.summary.calls
        elapsed = time.monotonic() - self.started
        finished = summary.done + summary.failed
        return RunProgress(
            run_id=summary.run_id,
            done=summary.done,
            failed=summary.failed,
            total=self.total,
            calls=calls.calls,
            cache_hits=calls.cache_hits,
            input_tokens=calls.input_tokens,
            output_tokens=calls.output_tokens,
            cost_usd=calls.cost_usd,
            elapsed_s=elapsed,
            episodes_per_min=finished / elapsed * 60 if elapsed else 0.0,
        )


@dataclass(frozen=True, slots=True)
class RunProgress:
    """A live run's counters at one moment (the progress line, the /live page)."""

    run_id: str
    done: int
    failed: int
    total: int
    calls: int
    cache_hits: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    elapsed_s: float
    episodes_per_min: float

    @property
    def finished(self) -> int:
        return self.done + self.failed


@dataclass(slots=True)
class RunSummary:
    run_id: str
    db: str
    done: int = 0
    failed: int = 0
    skipped: int = 0  # already done by an earlier invocation of this run
    turns: int = 0
    elapsed_s: float = 0.0
    stopped: str | None = None  # why the run stopped early, if it did
    pairs: int = 0  # preference pairs built by this invocation
    pair_report: PairReport | None = None  # over the whole run, from the store
    calls: GatewayStats = field(default_factory=GatewayStats)
    health: RoleHealth | None = None  # unusable replies per role and model, this invocation
    rejected_turns: Counter[str] = field(default_factory=Counter)  # by reason, this invocation
    invalid_turn_episodes: int = 0  # episodes ended because a turn kept failing validation
    notices: list[str] = field(default_factory=list)  # said before the run started
    tool_calls: Counter[str] = field(default_factory=Counter)  # by status, this invocation
    # Recipes' openings by kind, and evolutions eliminated by reason, this invocation.
    openings: Counter[str] = field(default_factory=Counter)
    eliminated: Counter[str] = field(default_factory=Counter)

    @property
    def failed_without_pairs(self) -> bool:
        """No pair exists and reviewing failed somewhere: a corpus of failures, not a quiet 0."""
        report = self.pair_report
        if report is None or any(report.pairs.values()):
            return False
        failed_outcomes = sum(n for outcome, n in report.outcomes.items() if outcome.endswith("_failed"))
        return bool(failed_outcomes or self.stopped)


def new_run_id() -> str:
    """A fresh run id: when it started, and a random suffix."""
    return f"run-{utcnow():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


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
    review: ReviewSettings | None
    checks: CheckSuite
    run_seed: int  # with the index, picks the persona and variables by coverage sampling
    attempted_before: bool = True  # the store held a row of it when the run started


def _jobs(
    config: RunConfig, loaded: list[LoadedScenario], run_id: str, check_runner: CheckRunner
) -> Iterator[_Job]:
    """Every episode of the run, made one at a time: memory does not grow with ``--episodes``."""
    for item in loaded:
        scenario = item.scenario
        review = _review_settings(config, item)
        checks = CheckSuite(tuple(scenario.checks), scenario.check_timeout_s, check_runner)
        for index in range(config.episodes):
            yield _Job(
                item,
                index,
                episode_seed(config.seed, scenario.name, index),
                f"{run_id}/{scenario.name}/{index:05d}",
                review,
                checks,
                config.seed,
            )


def _review_settings(config: RunConfig, item: LoadedScenario) -> ReviewSettings | None:
    review = config.review
    candidates = config.role_models().candidates
    if not review.critique and review.best_of_n < 2 and not candidates:
        return None
    return ReviewSettings(
        critique=review.critique,
        revise_below=item.scenario.revise_below or review.revise_below,
        min_margin=review.min_margin,
        best_of_n=review.best_of_n,
        best_of_n_turns=review.best_of_n_turns,
        refine_rounds=review.refine_rounds,
        principles_per_critique=review.principles_per_critique,
        candidate_models=candidates,
    )


def prepare(config: RunConfig) -> tuple[list[LoadedScenario], RoleModels]:
    """Validate everything a run needs before anything is written.

    Raises:
        ScenarioError, ConfigError: one clear line naming what is wrong.
    """
    loaded = [
        load_scenario(item) if isinstance(item, str) else LoadedScenario(item, f"{OBJECT_PREFIX}{item.name}")
        for item in config.scenarios
    ]
    names = [item.scenario.name for item in loaded]
    if len(set(names)) != len(names):
        raise ConfigError(f"the same scenario is listed twice: {names}")
    return loaded, config.role_models()


def _backends(models: RoleModels, config: RunConfig) -> dict[str, Backend]:
    names = {spec.backend for spec in models.every_model()}
    options = SimOptions(role_flip_rate=config.sim.role_flip_rate, mistake_rate=config.sim.mistake_rate)
    return {
        name: BACKEND_FACTORIES[name](
            sim_options=options, base_url=config.models.base_url, timeout_s=config.limits.timeout_s
        )
        for name in names
    }


def _price_table(config: RunConfig, models: RoleModels) -> PriceTable:
    """The run's prices; with a budget, every model must have one (else it cannot be kept)."""
    table = PriceTable.from_file(config.limits.prices)
    if config.limits.budget_usd is not None:
        unpriced = sorted({str(s) for s in models.every_model() if table.lookup(s.backend, s.model) is None})
        if unpriced:
            raise ConfigError(
                f"--budget-usd needs a price for {', '.join(unpriced)}: pass --prices FILE.json "
                'with e.g. {"MODEL": {"input": 3.0, "output": 15.0}} (USD per million tokens)'
            )
    return table


def load_run_config(db: str | Path, run_id: str) -> RunConfig:
    """The configuration a run was started with, as stored in ``runs.config``.

    Raises:
        StoreError: ``db`` cannot be opened.
        ConfigError: no run ``run_id`` in ``db``, or its stored config no longer validates.
    """
    with Store.open(db, read_only=True) as store:
        rows = store.sql("SELECT config FROM runs WHERE run_id = ?", [run_id])
        recent = store.sql("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 5")
    known = [row[0] for row in recent]
    if not rows:
        hint = f"recent runs: {', '.join(known)}" if known else "it holds no runs"
        raise ConfigError(f"{db}: no run '{run_id}' ({hint})")
    try:
        return RunConfig.model_validate_json(rows[0][0])
    except ValidationError as exc:
        raise ConfigError(f"{db}: run '{run_id}' has a config this version cannot read: {exc}") from exc


async def run(
    config: RunConfig,
    db: str | Path,
    *,
    on_episode: Callable[[EpisodeRecord], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
    on_live: Callable[[LiveRun], None] | None = None,
    backends: dict[str, Backend] | None = None,
) -> RunSummary:
    """Perform ``config.episodes`` episodes of each scenario into the store at ``db``.

    Rerunning with the run id of an existing run resumes it: done episodes are skipped and
    unfinished ones replay from the start through the call cache.

    Args:
        on_start: called once with (episodes to perform, episodes already done).
        on_episode: called with each finished episode's record: its status ('done' or
            'failed'), turns and pairs.
        on_notice: called with each one-line notice before the first episode (e.g. that this
            run repeats the episodes of an earlier run); also kept in ``RunSummary.notices``.
        on_live: called once, on the run's event loop, before the first episode starts, with
            the live run: its summary, whose counters (episodes, calls, tokens, cost) grow as
            the run goes, and its store writer (a viewer reads through it); what it adds to
            ``closers`` is awaited before the store closes.
        backends: override the backends built from the model specs (tests use this).
    """
    loaded, models = prepare(config)
    prices = _price_table(config, models)
    # Built before the store opens: a missing API key is a one-line error that writes nothing.
    backends = backends or _backends(models, config)
    run_id = config.run_id or new_run_id()
    try:
        store = Store.open(db)
    except BaseException:
        await close_backends(backends)
        raise
    writer = StoreWriter(store)
    check_runner = ForkedCheckRunner()
    summary = RunSummary(run_id=run_id, db=str(db))
    live = LiveRun(summary, writer)
    started = time.perf_counter()
    try:
        if str(db) != ":memory:" or config.execution.shard_dir:
            # What Ray workers of an earlier invocation wrote and no driver brought in: their
            # paid calls and finished episodes, before deciding what is left to do.
            await ingest_leftover_shards(writer, shard_folder(db, run_id, config.execution.shard_dir))
        statuses, notices = await _register_run(writer, config, run_id, loaded)
        for notice in notices:
            summary.notices.append(notice)
            if on_notice:
                on_notice(notice)
        prior_cost = await writer.run(_run_cost, store, run_id)
        total = len(loaded) * config.episodes
        summary.skipped = sum(status == "done" for status in statuses.values())
        todo = (
            replace(job, attempted_before=job.episode_id in statuses)
            for job in _jobs(config, loaded, run_id, check_runner)
            if statuses.get(job.episode_id) != "done"
        )
        live.total = total - summary.skipped
        if on_start:
            on_start(total - summary.skipped, summary.skipped)
        gateway = Gateway(
            backends,
            writer,
            run_id=run_id,
            concurrency=config.limits.concurrency,
            jitter_seed=config.seed,
            limiters=ModelLimiters(partial(RateLimiter, rpm=config.limits.rpm, tpm=config.limits.tpm)),
            breaker=CircuitBreaker(),
            prices=prices,
            budget=Budget(config.limits.budget_usd, spent_usd=prior_cost)
            if config.limits.budget_usd
            else None,
            timeout_s=config.limits.timeout_s,
        )
        gateway.stats.prior_cost_usd = prior_cost
        summary.calls = gateway.stats
        health = RoleHealth(models.for_role)
        summary.health = health
        if on_live:
            on_live(live)
        params = GenerationParams(temperature=config.models.temperature, max_tokens=config.models.max_tokens)
        stop = asyncio.Event()

        if config.execution.executor == "ray":
            from dramaturg._ray import RayRun, perform_on_ray  # imports Ray: only when asked for

            await perform_on_ray(
                RayRun(config, run_id, db, writer, summary, prior_cost, on_episode), todo, live.total
            )
        else:
            await perform(
                todo,
                min(config.limits.concurrency, total - summary.skipped),
                _Stage(
                    writer,
                    gateway,
                    models,
                    params,
                    run_id,
                    summary,
                    stop,
                    health,
                    config.review.turn_attempts,
                ),
                on_episode,
            )
        await writer.drain()
        summary.pair_report = await writer.run(pair_report, writer.store, run_id)
        await writer.run(record_health_metrics, writer.store, run_id)
    finally:
        summary.elapsed_s = time.perf_counter() - started
        for close in live.closers:
            await close()
        check_runner.close()
        await close_backends(backends)
        writer.close()
        store.close()
    return summary


@dataclass(frozen=True, slots=True)
class _Stage:
    """What every episode of one process's share of a run is performed with."""

    writer: StoreWriter
    gateway: Gateway
    models: RoleModels
    params: GenerationParams
    run_id: str
    summary: RunSummary
    stop: asyncio.Event
    health: RoleHealth
    turn_attempts: int


async def perform(
    jobs: Iterator[_Job],
    performers: int,
    stage: _Stage,
    on_episode: Callable[[EpisodeRecord], None] | None = None,
) -> None:
    """Perform ``jobs`` with ``performers`` at once; each takes the next job when it is free,
    so jobs are made as they start. Stops taking jobs once ``stage.stop`` is set."""

    async def performer() -> None:
        for job in jobs:
            if stage.stop.is_set():
                return
            result = await _episode(job, stage)
            if on_episode and result is not None:
                on_episode(EpisodeRecord.of(result, job.loaded.scenario.name))

    tasks = [asyncio.create_task(performer()) for _ in range(performers)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


def _run_cost(store: Store, run_id: str) -> float:
    """What the run's completed calls cost so far, over all its invocations."""
    rows = store.sql("SELECT coalesce(sum(cost_usd), 0) FROM llm_calls WHERE run_id = ?", [run_id])
    return float(rows[0][0])


async def _register_run(
    writer: StoreWriter, config: RunConfig, run_id: str, loaded: list[LoadedScenario]
) -> tuple[dict[str, str], list[str]]:
    """Record the run (or check a resumed one); return its episode statuses and notices."""

    def register() -> tuple[dict[str, str], list[str]]:
        store = writer.store
        notices: list[str] = []
        if store.run_exists(run_id):
            _check_same_run(store, config, run_id)
            with store.transaction() as con:
                stored = config.model_copy(update={"run_id": run_id}).model_dump_json()
                con.execute("UPDATE runs SET config = ? WHERE run_id = ?", [stored, run_id])
        else:
            notices += _reproduced_runs(store, config, [item.scenario.name for item in loaded])
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
        return store.episode_statuses(run_id), notices

    return await writer.run(register)


def _reproduced_runs(store: Store, config: RunConfig, scenarios: list[str]) -> list[str]:
    """A notice when earlier runs staged these scenarios with this seed: their episodes repeat.

    Episode seeds depend on the run seed, the scenario and the index, not on the run id, so
    such a run re-stages the same personas and variables (and, on the same models, the same
    dialogues, mostly from the call cache).
    """
    rows = store.sql(
        "SELECT s.run_id, string_agg(s.name, ', ' ORDER BY s.name) "
        "FROM scenarios s JOIN runs r USING (run_id) WHERE r.seed = ? AND list_contains(?, s.name) "
        "GROUP BY s.run_id, r.created_at "
        "ORDER BY r.created_at, s.run_id",
        [config.seed, scenarios],
    )
    if not rows:
        return []
    earlier = "; ".join(f"{run} ({names})" for run, names in rows[:3]) + ("; ..." if len(rows) > 3 else "")
    return [
        f"note: seed {config.seed} repeats the episodes of earlier runs in this store: {earlier}; "
        "export leaves out repeated dialogues as duplicates. Pass --seed N to stage new ones."
    ]


# What a rerun of an existing run id may change: how it runs (the limits) and which model
# plays a role (a run stopped because a role's replies were unusable resumes with a model that
# works; finished episodes keep what they were made with, as every llm_calls row names its
# model). Every other option must match the stored config, so a newly added one is protected too.
_MAY_CHANGE: dict[str, Any] = {
    "run_id": True,
    "limits": True,
    "execution": True,
    "models": {
        "model",
        "user_model",
        "assistant_model",
        "critic_model",
        "judge_model",
        "tool_model",
        "base_url",
    },
}


def _content_settings(config: RunConfig) -> dict[str, object]:
    """The options that decide what a run's episodes say, by dotted name."""
    flat: dict[str, object] = {}
    for key, value in config.model_dump(exclude=_MAY_CHANGE).items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": inner for name, inner in value.items()})
        else:
            flat[key] = value
    return flat


def _check_same_run(store: Store, config: RunConfig, run_id: str) -> None:
    """Refuse to resume ``run_id`` with settings that would change what its episodes say."""
    stored = RunConfig.model_validate_json(
        store.sql("SELECT config FROM runs WHERE run_id = ?", [run_id])[0][0]
    )
    before, after = _content_settings(stored), _content_settings(config)
    changed = [name for name in before.keys() | after.keys() if before.get(name) != after.get(name)]
    if changed:
        details = ", ".join(f"{name} {before.get(name)!r} -> {after.get(name)!r}" for name in sorted(changed))
        raise ConfigError(
            f"run '{run_id}' already exists with other settings ({details}); resume it with "
            f"`dramaturg resume {run_id} --db {store.path}`, or pick a new --run-id"
        )


async def _episode(job: _Job, stage: _Stage) -> EpisodeResult | None:
    """Perform one job and store it; None when the run stops and leaves it to a resume."""
    try:
        spec = job.loaded.scenario.instantiate(job.seed, index=job.index, run_seed=job.run_seed)
    except ValueError as exc:
        # The scenario's derive function (user code) failed for this seed: this episode
        # fails, with the reason, and the run goes on.
        await stage.writer.start_episode(_start(job, stage.run_id, persona="", spec_json="{}"))
        return await _fail(stage.writer, job, exc, stage.summary)
    await stage.writer.start_episode(
        _start(job, stage.run_id, persona=spec.persona, spec_json=spec.to_json())
    )
    scenario = job.loaded.scenario
    try:
        toolbox = (
            ToolBox.build(
                scenario.function_tools,
                scenario.build_environment(spec),
                episode_id=job.episode_id,
                max_steps=scenario.max_tool_steps,
                timeout_s=scenario.tool_timeout_s,
                simulator=ToolSimulator(
                    stage.gateway,
                    stage.models.tool_simulator,
                    spec,
                    job.episode_id,
                    stage.params,
                    health=stage.health,
                ),
            )
            if scenario.function_tools
            else None
        )
    except ValueError as exc:
        # The scenario's environment function (user code) failed for this episode's spec.
        return await _fail(stage.writer, job, exc, stage.summary)
    try:
        beginning = (
            await begin_episode(
                scenario.opening,
                spec,
                index=job.index,
                gateway=stage.gateway,
                models=stage.models,
                params=stage.params,
                episode_id=job.episode_id,
                health=stage.health,
            )
            if scenario.opening is not None
            else Beginning(spec)
        )
        if isinstance(scenario.opening, SpinDialogues):
            outcome = await replay_for_spin(
                beginning,
                gateway=stage.gateway,
                models=stage.models,
                params=stage.params,
                episode_id=job.episode_id,
                run_id=stage.run_id,
                settings=job.review or ReviewSettings(),
                checks=job.checks,
                health=stage.health,
                turn_attempts=stage.turn_attempts,
            )
        else:
            outcome = await perform_episode(
                beginning.spec,
                gateway=stage.gateway,
                models=stage.models,
                episode_id=job.episode_id,
                params=stage.params,
                review=job.review,
                run_id=stage.run_id,
                checks=job.checks,
                turn_attempts=stage.turn_attempts,
                health=stage.health,
                tools=toolbox,
                prefix=beginning.prefix,
                prefix_opens=beginning.opening_request,
                opening=beginning.row,
            )
    except RoleFailing as exc:
        # Leave the episode 'running': once the role's model is fixed, a resume replays it.
        if not stage.stop.is_set():
            stage.summary.stopped = f"replies unusable: {exc}"
        stage.stop.set()
        return None
    except BackendError as exc:
        if exc.kind in _FATAL_KINDS:
            # Leave the episode 'running': the run stops and a resume replays it.
            if not stage.stop.is_set():
                stage.summary.stopped = f"{exc.kind}: {exc}"
            stage.stop.set()
            return None
        return await _fail(stage.writer, job, exc, stage.summary)
    except RunError as exc:
        return await _fail(stage.writer, job, exc, stage.summary)
    result = EpisodeResult(
        episode_id=job.episode_id,
        status="done",
        termination_reason=outcome.termination_reason,
        turns=outcome.turns,
        finished_at=utcnow(),
        goal_met=outcome.goal_met,
        user_consistent=outcome.user_consistent,
        consistency_detail=outcome.consistency_detail,
        review=outcome.review,
    )
    await stage.writer.finish_episode(result)
    if outcome.review:
        stage.summary.rejected_turns.update(row.reason for row in outcome.review.rejections)
        stage.summary.tool_calls.update(row.status for row in outcome.review.tool_calls)
        stage.summary.openings.update(row.kind for row in outcome.review.openings)
        stage.summary.eliminated.update(row.drop_reason for row in outcome.review.openings if row.drop_reason)
    stage.summary.invalid_turn_episodes += outcome.termination_reason == "invalid_turn"
    stage.summary.pairs += len(outcome.review.pairs) if outcome.review else 0
    stage.summary.done += 1
    stage.summary.turns += len(outcome.turns)
    return result


def _start(job: _Job, run_id: str, *, persona: str, spec_json: str) -> EpisodeStart:
    return EpisodeStart(
        episode_id=job.episode_id,
        run_id=run_id,
        scenario=job.loaded.scenario.name,
        idx=job.index,
        seed=job.seed,
        persona=persona,
        spec_json=spec_json,
        started_at=utcnow(),
        attempted_before=job.attempted_before,
    )


def run_sync(config: RunConfig, db: str | Path, **options: Any) -> RunSummary:
    """:func:`run` for scripts and notebooks: blocks until the run ends.

    Inside a running event loop (a Jupyter cell), the run gets a loop of its own on a worker
    thread, so it works there too.

    Example:
        >>> summary = run_sync(RunConfig(scenarios=["math-tutor"], episodes=1), ":memory:")  # doctest: +SKIP
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run(config, db, **options))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dramaturg-run") as worker:
        return worker.submit(asyncio.run, run(config, db, **options)).result()


async def _fail(writer: StoreWriter, job: _Job, exc: Exception, summary: RunSummary) -> EpisodeResult:
    summary.failed += 1
    result = EpisodeResult(
        episode_id=job.episode_id,
        status="failed",
        termination_reason="error",
        turns=(),
        finished_at=utcnow(),
        error=f"{type(exc).__name__}: {exc}",
    )
    await writer.finish_episode(result)
    return result
