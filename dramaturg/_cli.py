"""The ``dramaturg`` command line.

Only typer, Rich's console and light modules load here: `dramaturg --help`, `dramaturg
scenarios` and a mistyped option answer without the runtime (DuckDB, networkx, autogen, the
config's models), which each command imports when it runs. tests/test_cli_startup.py holds
this.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperOption

from dramaturg._errors import DramaturgError, StoreError, UserError
from dramaturg._terminal import plain, safe
from dramaturg.outputs import ExportFormat
from dramaturg.viewer import serve_command

if TYPE_CHECKING:
    from dramaturg._calibrate import CalibrationReport
    from dramaturg._gateway import GatewayStats
    from dramaturg._run import EpisodeRecord, LiveRun, RunConfig, RunProgress, RunSummary
    from dramaturg.evaluators import CurationResult, MetricSet
    from dramaturg.memory import Store

app = typer.Typer(
    name="dramaturg",
    help=(
        "Stage conversations between role agents and keep them as training data.\n\n"
        "Start with:  dramaturg run support-refund --episodes 20 --db corpus.duckdb\n\n"
        "Everything lands in one DuckDB file; query it with SQL."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

DbOption = Annotated[Path, typer.Option("--db", help="The DuckDB file to write (created if missing).")]
_ROLE_MODEL = "BACKEND:MODEL for the {}; defaults to --model."
BudgetOption = Annotated[
    float | None,
    typer.Option(
        "--budget-usd",
        min=0.0,
        help="Stop cleanly before the run's model calls cost more than this (USD; see --prices).",
    ),
]
RpmOption = Annotated[
    float | None, typer.Option("--rpm", min=0.0, help="Requests per minute for each model, paced evenly.")
]
TpmOption = Annotated[
    float | None,
    typer.Option(
        "--tpm", min=0.0, help="Tokens per minute for each model (estimated, then corrected by usage)."
    ),
]
_TIMEOUT_HELP = "Seconds one model call may take before it counts as a timeout."
_EXECUTION = "Execution"
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="With --executor ray: the cluster's HOST:PORT (default: RAY_ADDRESS, else the cluster "
        "last started on this machine, else a new local one).",
        rich_help_panel=_EXECUTION,
    ),
]
ShardDirOption = Annotated[
    str | None,
    typer.Option(
        "--shard-dir",
        help="With --executor ray: where workers write their shards, a folder every node sees at "
        "the same path (default: DB.shards next to the store).",
        rich_help_panel=_EXECUTION,
    ),
]


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {safe(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def _exit_codes() -> Iterator[None]:
    """dramaturg's errors as one line and an exit code: 2 for the user's input, else 1."""
    try:
        yield
    except UserError as exc:
        raise _fail(str(exc), 2) from exc
    except StoreError as exc:
        raise _fail(str(exc), 1) from exc
    except DramaturgError as exc:
        raise _fail(f"{type(exc).__name__}: {exc}", 1) from exc


@app.command("run")
def run_command(
    scenarios: Annotated[
        list[str],
        typer.Argument(help="Built-in names (see `dramaturg scenarios`) or files: path.py or path.py:NAME."),
    ],
    db: DbOption = Path("dramaturg.duckdb"),
    episodes: Annotated[int, typer.Option("--episodes", "-n", min=1, help="Episodes per scenario.")] = 10,
    seed: Annotated[int, typer.Option(help="Run seed; same seed, same episodes.")] = 0,
    concurrency: Annotated[int, typer.Option(min=1, help="Episodes and model calls in flight at once.")] = 8,
    model: Annotated[str, typer.Option(help="BACKEND[:MODEL] for every role, e.g. sim.")] = "sim",
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Name the run; an existing run id resumes that run.")
    ] = None,
    sim_role_flip_rate: Annotated[
        float, typer.Option(help="sim backend: share of user turns that wrongly sound like the assistant.")
    ] = 0.0,
    user_model: Annotated[
        str | None, typer.Option("--user-model", help=_ROLE_MODEL.format("user simulator"))
    ] = None,
    assistant_model: Annotated[
        str | None, typer.Option("--assistant-model", help=_ROLE_MODEL.format("assistant"))
    ] = None,
    critic_model: Annotated[
        str | None, typer.Option("--critic-model", help=_ROLE_MODEL.format("critic"))
    ] = None,
    judge_model: Annotated[
        str | None, typer.Option("--judge-model", help=_ROLE_MODEL.format("verifier (judge)"))
    ] = None,
    tool_model: Annotated[
        str | None,
        typer.Option("--tool-model", help=_ROLE_MODEL.format("tool simulator (answers simulated tools)")),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            help="openai backend endpoint, e.g. http://localhost:8000/v1 "
            "(default: OPENAI_BASE_URL). Anthropic's comes from ANTHROPIC_BASE_URL.",
        ),
    ] = None,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    budget_usd: BudgetOption = None,
    prices: Annotated[
        Path | None,
        typer.Option(
            "--prices",
            help="JSON prices in USD per million tokens, e.g. "
            '{"MODEL": {"input": 3, "output": 15}}; overrides the built-in table.',
        ),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.0, help=_TIMEOUT_HELP)] = 120.0,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=1, help="Most tokens a reply may have.")
    ] = 1024,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0, help="Sampling temperature.")] = 0.8,
    turn_attempts: Annotated[
        int,
        typer.Option(
            min=1,
            max=10,
            help="Tries at a turn that fails validation (role flip, echo, meta-text) "
            "before its episode ends.",
        ),
    ] = 3,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Serve the viewer from the running process, with a progress page that updates "
            "(http://127.0.0.1:PORT/live); the store is browsable while the run holds it.",
        ),
    ] = False,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="The port of --serve (0: any free one).")
    ] = 8765,
    critique: Annotated[
        bool,
        typer.Option(
            "--critique/--no-critique",
            help="Critique every assistant turn online and revise weak ones (pairs come from revisions).",
            rich_help_panel="Critique and pairs",
        ),
    ] = True,
    revise_below: Annotated[
        float,
        typer.Option(
            min=1,
            max=10,
            help="Revise replies the critic scores below this (1-10).",
            rich_help_panel="Critique and pairs",
        ),
    ] = 7.0,
    min_margin: Annotated[
        float,
        typer.Option(
            min=0,
            help="Smallest critic-score margin a preference pair needs.",
            rich_help_panel="Critique and pairs",
        ),
    ] = 1.0,
    best_of_n: Annotated[
        int,
        typer.Option(
            min=0,
            max=16,
            help="Candidates sampled at best-of-n turns (0 = off).",
            rich_help_panel="Critique and pairs",
        ),
    ] = 3,
    best_of_n_turns: Annotated[
        int,
        typer.Option(
            min=0,
            help="How many of each episode's first assistant turns get best-of-n.",
            rich_help_panel="Critique and pairs",
        ),
    ] = 1,
    candidate_models: Annotated[
        str | None,
        typer.Option(
            "--candidate-models",
            metavar="A,B,...",
            help="Best-of-n across models (UltraFeedback): one candidate from each BACKEND:MODEL, "
            "beside the assistant's own reply, ranked by the critic and judged in both orders.",
            rich_help_panel="Critique and pairs",
        ),
    ] = None,
    refine_rounds: Annotated[
        int,
        typer.Option(
            min=1,
            max=8,
            help="Self-Refine: critique and revise up to this many times while the reply scores "
            "below --revise-below or fails a check; the pair is the first version against the last.",
            rich_help_panel="Critique and pairs",
        ),
    ] = 1,
    principles_per_critique: Annotated[
        int,
        typer.Option(
            min=0,
            help="Constitutional AI: each critique judges by this many of the scenario's principles, "
            "sampled per critique (0: all of them).",
            rich_help_panel="Critique and pairs",
        ),
    ] = 0,
    sim_mistake_rate: Annotated[
        float,
        typer.Option(
            min=0,
            max=1,
            help="sim backend: share of assistant replies with a planted mistake.",
            rich_help_panel="Critique and pairs",
        ),
    ] = 0.25,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            metavar="local|ray",
            help="Where episodes are performed: 'local' (this process) or 'ray' (batches on a Ray "
            "cluster, one gateway per worker, --concurrency per worker, rate limits and budget "
            "shared; needs `pip install 'dramaturg[ray]'`; see docs/ray.md).",
            rich_help_panel=_EXECUTION,
        ),
    ] = "local",
    ray_address: RayAddressOption = None,
    shard_dir: ShardDirOption = None,
) -> None:
    """Perform EPISODES episodes of each SCENARIO and store every turn and model call.

    Example:  dramaturg run support-refund math-tutor -n 20 --db corpus.duckdb
    """
    from pydantic import ValidationError

    from dramaturg._config import (
        ExecutionOptions,
        LimitOptions,
        ModelOptions,
        ReviewOptions,
        SimBackendOptions,
        option_name,
    )
    from dramaturg._run import RunConfig, new_run_id, prepare

    try:
        config = RunConfig(
            scenarios=[*scenarios],
            episodes=episodes,
            seed=seed,
            # Named now, so that an interrupted run can say how to resume it.
            run_id=run_id or new_run_id(),
            models=ModelOptions(
                model=model,
                user_model=user_model,
                assistant_model=assistant_model,
                critic_model=critic_model,
                judge_model=judge_model,
                tool_model=tool_model,
                candidate_models=[m.strip() for m in (candidate_models or "").split(",") if m.strip()],
                temperature=temperature,
                max_tokens=max_tokens,
                base_url=base_url,
            ),
            review=ReviewOptions(
                critique=critique,
                revise_below=revise_below,
                min_margin=min_margin,
                best_of_n=best_of_n,
                best_of_n_turns=best_of_n_turns,
                turn_attempts=turn_attempts,
                refine_rounds=refine_rounds,
                principles_per_critique=principles_per_critique,
            ),
            limits=LimitOptions(
                concurrency=concurrency,
                rpm=rpm,
                tpm=tpm,
                budget_usd=budget_usd,
                prices=str(prices) if prices else None,
                timeout_s=timeout,
            ),
            sim=SimBackendOptions(role_flip_rate=sim_role_flip_rate, mistake_rate=sim_mistake_rate),
            execution=ExecutionOptions.model_validate(
                {"executor": executor, "ray_address": ray_address, "shard_dir": shard_dir}
            ),
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise _fail(f"option '{option_name(first['loc'])}': {first['msg']}", 2) from exc
    try:
        prepare(config)  # scenario and model-spec errors surface before anything is drawn
        _check_executor(config)
    except UserError as exc:
        raise _fail(str(exc), 2) from exc
    if model == "sim" and not any((user_model, assistant_model, critic_model, judge_model, tool_model)):
        err.print(
            "note: using the offline [bold]sim[/] backend (simulated replies; pass --model for a real one)",
            soft_wrap=True,
        )
    _note_uncalibrated_judge(config, db)
    _finish(_run_with_progress(config, db, serve_port=port if serve else None))


def _check_executor(config: RunConfig) -> None:
    """Ray is an optional extra: without it, --executor ray is one line before anything is written."""
    if config.execution.executor == "ray":
        from dramaturg._ray import require_ray

        require_ray()


def _note_uncalibrated_judge(config: RunConfig, db: Path) -> None:
    """A judge nobody measured decides which pairs ship: say so, and how to measure it."""
    from dramaturg._calibrate import calibrated_judges
    from dramaturg.memory import Store

    judge = config.role_models().verifier
    if judge.backend == "sim":
        return  # the sim judges only its own planted mistakes; there is nothing to learn
    calibrated: set[str] = set()
    if db.exists():
        try:
            with Store.open(db, read_only=True) as store:
                calibrated = calibrated_judges(store)
        except StoreError:
            return  # the run itself will say what is wrong with the store
    if str(judge) not in calibrated:
        err.print(
            f"note: judge {safe(judge)} was never calibrated in this store; measure it with "
            f"`dramaturg calibrate --judge-model {safe(judge)} --db {safe(db)}`",
            soft_wrap=True,
            highlight=False,
        )


@app.command("resume")
def resume_command(
    run_id: Annotated[str, typer.Argument(help="The run to finish (see `SELECT run_id FROM runs`).")],
    db: DbOption = Path("dramaturg.duckdb"),
    budget_usd: BudgetOption = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Episodes and model calls in flight at once.")
    ] = None,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    timeout: Annotated[float | None, typer.Option("--timeout", min=0.0, help=_TIMEOUT_HELP)] = None,
    model: Annotated[str | None, typer.Option(help="Replace the model of every role.")] = None,
    user_model: Annotated[
        str | None, typer.Option("--user-model", help="Replace the user simulator's model.")
    ] = None,
    assistant_model: Annotated[
        str | None, typer.Option("--assistant-model", help="Replace the assistant's model.")
    ] = None,
    critic_model: Annotated[
        str | None, typer.Option("--critic-model", help="Replace the critic's model.")
    ] = None,
    judge_model: Annotated[
        str | None, typer.Option("--judge-model", help="Replace the verifier's (judge's) model.")
    ] = None,
    tool_model: Annotated[
        str | None, typer.Option("--tool-model", help="Replace the tool simulator's model.")
    ] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="Replace the openai endpoint.")] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            metavar="local|ray",
            help="Perform the rest here ('local') or on a Ray cluster ('ray'); default: as it ran.",
            rich_help_panel=_EXECUTION,
        ),
    ] = None,
    ray_address: RayAddressOption = None,
    shard_dir: ShardDirOption = None,
) -> None:
    """Finish a run that stopped or crashed, with the settings it was started with.

    Done episodes are skipped; unfinished ones replay from their start through the call
    cache, so no model call that completed before is paid for again. Limits, budget and
    concurrency may be changed, and so may a role's model (a run stopped because its critic's
    replies did not parse resumes with one that works); the rest of what decides the
    episodes' content may not.

    Example:  dramaturg resume run-20250101-120000-1a2b3c --db corpus.duckdb --critic-model openai:gpt-4o
    """
    from pydantic import ValidationError

    from dramaturg._config import option_name
    from dramaturg._run import load_run_config

    try:
        stored = load_run_config(db, run_id)
    except UserError as exc:
        raise _fail(str(exc), 2) from exc
    except StoreError as exc:
        raise _fail(str(exc), 1) from exc
    changes = {
        "budget_usd": budget_usd,
        "concurrency": concurrency,
        "rpm": rpm,
        "tpm": tpm,
        "timeout_s": timeout,
        "model": model,
        "user_model": user_model,
        "assistant_model": assistant_model,
        "critic_model": critic_model,
        "judge_model": judge_model,
        "tool_model": tool_model,
        "base_url": base_url,
        "executor": executor,
        "ray_address": ray_address,
        "shard_dir": shard_dir,
    }
    # Moving a Ray run back to this machine leaves its Ray options behind.
    local = {"execution": {"executor": "local"}} if executor == "local" else {}
    try:
        config = stored.with_changes(**{k: v for k, v in changes.items() if v is not None}, **local)
        _check_executor(config)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise _fail(f"option '{option_name(first['loc'])}': {first['msg']}", 2) from exc
    except UserError as exc:
        raise _fail(str(exc), 2) from exc
    _finish(_run_with_progress(config, db))


def _finish(summary: RunSummary) -> None:
    _print_summary(summary)
    if summary.stopped:
        raise _fail(
            f"run stopped: {summary.stopped}. Fix that, then: "
            f"dramaturg resume {summary.run_id} --db {summary.db}",
            1,
        )
    if summary.failed_without_pairs:
        raise _fail(
            "no preference pair was built and reviewing failed (see 'pairs' and 'replies' above); "
            "the critic or judge model cannot be used as it is",
            1,
        )


def _run_with_progress(config: RunConfig, db: Path, *, serve_port: int | None = None) -> RunSummary:
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dramaturg._run import run

    progress = Progress(
        TextColumn("[bold]episodes"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    task = progress.add_task("episodes", total=None, failed=0)
    failed = 0

    def on_start(todo: int, skipped: int) -> None:
        progress.update(task, total=todo)
        if skipped:
            err.print(f"resuming: {skipped} episodes already done")

    def on_episode(record: EpisodeRecord) -> None:
        nonlocal failed
        failed += record.status == "failed"
        progress.update(task, advance=1, failed=failed)

    def on_notice(notice: str) -> None:
        err.print(safe(notice), highlight=False, soft_wrap=True)

    # Without a terminal (CI, nohup, a pipe) the bar draws nothing: a line every 10 s instead.
    # DRAMATURG_PROGRESS_EVERY (seconds) changes the interval; the tests use it.
    every = float(os.environ.get("DRAMATURG_PROGRESS_EVERY", "10"))
    heartbeat = None if err.is_terminal else _Heartbeat(every)

    viewer = None
    if serve_port is not None:
        from dramaturg._live import LiveViewer  # the web stack is imported only when it serves

        try:
            viewer = LiveViewer(db, port=serve_port)  # the port, bound before the run starts
        except UserError as exc:
            raise _fail(str(exc), 2) from exc

    def on_live(live: LiveRun) -> None:
        if heartbeat is not None:
            heartbeat.start(live)
        if viewer is not None:
            viewer.start(live)
            err.print(f"serving the run at {viewer.url}", markup=False, highlight=False)

    try:
        with progress, _exit_codes():
            return asyncio.run(
                run(
                    config,
                    db,
                    on_episode=on_episode,
                    on_start=on_start,
                    on_notice=on_notice,
                    on_live=on_live,
                )
            )
    except KeyboardInterrupt as exc:
        raise _fail(
            f"interrupted; the store is intact. Resume with: dramaturg resume {config.run_id} --db {db}",
            130,
        ) from exc
    finally:
        if heartbeat is not None:
            heartbeat.stop()


class _Heartbeat:
    """One progress line every ``every`` seconds from a thread, for runs without a terminal."""

    def __init__(self, every: float = 10.0):
        self.every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, live: LiveRun) -> None:
        def beat() -> None:
            while not self._stop.wait(self.every):
                err.print(progress_line(live.progress()), markup=False, highlight=False, soft_wrap=True)

        self._thread = threading.Thread(target=beat, name="dramaturg-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def progress_line(now: RunProgress) -> str:
    """Where a run stands, in one line: episodes, calls, tokens, cost and rate."""
    return (
        f"progress  {now.finished}/{now.total} episodes ({now.done} done, {now.failed} failed) · "
        f"{now.calls:,} calls · {now.input_tokens + now.output_tokens:,} tokens · "
        f"${now.cost_usd:.4f} · {now.episodes_per_min:.1f} episodes/min · {now.elapsed_s:.0f} s"
    )


def _print_summary(summary: RunSummary) -> None:
    calls = summary.calls
    skipped = f" ({summary.skipped} already done)" if summary.skipped else ""
    rows = [
        ("run", f"{summary.run_id} -> {summary.db}"),
        ("episodes", f"{summary.done} done, {summary.failed} failed{skipped}"),
        ("turns", _turn_row(summary)),
        *_tool_rows(summary),
        *_opening_rows(summary),
        *_pair_rows(summary),
        *_health_rows(summary),
        (
            "calls",
            f"{calls.calls} model calls, {calls.cache_hits} from cache, "
            f"{calls.retries} retries, {calls.failed_attempts} failed attempts"
            + _by_kind(calls.errors_by_kind),
        ),
        (
            "tokens",
            f"{calls.input_tokens:,} in / {calls.output_tokens:,} out" + _cache_tokens(calls),
        ),
        ("cost", _cost(calls)),
        *_usage_rows(calls),
        *[
            ("schema", f"{label} refused response_format; prompt-only JSON for it from then on")
            for label in sorted(calls.schema_fallbacks)
        ],
        *[
            ("limits", f"paced at {limit}, as the server's rate-limit headers said")
            for limit in calls.learned_limits
        ],
        ("elapsed", f"{summary.elapsed_s:.1f} s"),
    ]
    for label, value in rows:
        # Run ids, paths and model names are user text: printed literally, never as markup.
        out.print(f"{label:<9} {plain(value)}", markup=False, highlight=False, soft_wrap=True)


def _turn_row(summary: RunSummary) -> str:
    rejected = summary.rejected_turns
    text = f"{summary.turns} stored"
    if rejected:
        reasons = ", ".join(f"{reason} {n}" for reason, n in rejected.most_common())
        text += f"; {sum(rejected.values())} generated turns rejected and regenerated ({reasons})"
    else:
        text += "; 0 rejected by validation"
    if summary.invalid_turn_episodes:
        text += f"; {summary.invalid_turn_episodes} episodes ended on a turn that kept failing (not exported)"
    return text


def _tool_rows(summary: RunSummary) -> list[tuple[str, str]]:
    """Tool calls by outcome: an invalid one never ran; the assistant read its error instead."""
    calls = summary.tool_calls
    if not calls:
        return []
    parts = [f"{calls['ok']} ok"]
    if calls["invalid"]:
        parts.append(f"{calls['invalid']} invalid (unknown tool or bad arguments: never ran)")
    if calls["error"]:
        parts.append(f"{calls['error']} failed in the tool")
    return [("tools", f"{sum(calls.values())} calls: " + ", ".join(parts))]


def _opening_rows(summary: RunSummary) -> list[tuple[str, str]]:
    """How the recipes opened episodes; eliminated evolutions are counted by reason."""
    if not summary.openings:
        return []
    text = ", ".join(f"{kind} {n}" for kind, n in sorted(summary.openings.items()))
    evolved = summary.openings["evolved"]
    if evolved:
        dropped = sum(summary.eliminated.values())
        reasons = ", ".join(f"{reason} {n}" for reason, n in summary.eliminated.most_common())
        text += f"; evolutions kept {evolved - dropped} of {evolved}" + (
            f", eliminated {dropped} ({reasons}): those episodes opened with their seed" if dropped else ""
        )
    return [("openings", text)]


def _health_rows(summary: RunSummary) -> list[tuple[str, str]]:
    """Per role and model: replies that could not be used (unparsed, rejected, order-dependent)."""
    health = summary.health
    if health is None:
        return []
    rows = []
    for role, model, replies, failures in health.by_role():
        parts = [f"{n} {_FAILURE_WORDS[kind]}" for kind, n in sorted(failures.items())]
        rows.append(
            ("replies", f"{role:<15} {model:<32} {replies:>5} replies: {', '.join(parts) or 'all usable'}")
        )
    return rows


_FAILURE_WORDS = {
    "parse_failed": "did not parse",
    "turn_rejected": "failed validation",
    "position_inconsistent": "judgment pairs flipped with the order",
}


def _pair_rows(summary: RunSummary) -> list[tuple[str, str]]:
    report = summary.pair_report
    if report is None or not (report.pairs or report.outcomes):
        return []
    by_source = ", ".join(f"{source} {n}" for source, n in sorted(report.pairs.items())) or "none"
    unpaired = {k: v for k, v in sorted(report.outcomes.items()) if k != "paired"}
    rows = [
        (
            "pairs",
            f"{sum(report.pairs.values())} ({by_source})"
            + (
                f", {report.unconfirmed} of them not confirmed by the judges (export leaves them out)"
                if report.unconfirmed
                else ""
            )
            + "; no pair: "
            + (", ".join(f"{k} {v}" for k, v in unpaired.items()) or "none"),
        ),
        (
            "judges",
            f"{report.agreeing}/{report.judged_both_orders} candidate pairs judged alike in both orders",
        ),
    ]
    if report.correctness is not None:
        rows.append(
            (
                "correct",
                f"{report.correctness:.1%} of {report.with_ground_truth} pairs chose the side "
                "without the planted mistake (sim ground truth)",
            )
        )
    return rows


def _by_kind(errors: Counter[str]) -> str:
    return f" ({', '.join(f'{kind} {n}' for kind, n in errors.most_common())})" if errors else ""


def _cache_tokens(calls: GatewayStats) -> str:
    if not (calls.cache_read_tokens or calls.cache_write_tokens):
        return ""
    return f" (+ cache {calls.cache_read_tokens:,} read / {calls.cache_write_tokens:,} written)"


def _cost(calls: GatewayStats) -> str:
    text = f"${calls.cost_usd:.4f}"
    if calls.prior_cost_usd:
        text += f" (run total ${calls.prior_cost_usd + calls.cost_usd:.4f})"
    if calls.unpriced:
        text += f"; no price for {', '.join(sorted(calls.unpriced))} (counted as $0; see --prices)"
    return text


def _usage_rows(calls: GatewayStats) -> list[tuple[str, str]]:
    """One row per (role, model) that paid for calls: the summary's tokens-and-cost table."""
    rows = []
    for (role, model), usage in sorted(calls.usage.items()):
        rows.append(
            (
                "",
                f"{role:<15} {model:<32} {usage.calls:>5} calls {usage.input_tokens:>10,} in "
                f"{usage.output_tokens:>9,} out  ${usage.cost_usd:.4f}",
            )
        )
    return rows


@app.command("calibrate")
def calibrate_command(
    judge_model: Annotated[
        str, typer.Option("--judge-model", help="BACKEND:MODEL of the judge to calibrate.")
    ],
    db: DbOption = Path("dramaturg.duckdb"),
    critic_model: Annotated[
        str | None,
        typer.Option(
            "--critic-model", help="Scores both replies for the margin rule; defaults to the judge."
        ),
    ] = None,
    margin: Annotated[
        bool,
        typer.Option(
            "--margin/--no-margin",
            help="Apply the run's critic-margin rule to the survivors (2 more calls per probe).",
        ),
    ] = True,
    min_margin: Annotated[float, typer.Option(min=0, help="The margin a pair needs, as in `run`.")] = 1.0,
    probes: Annotated[
        Path | None, typer.Option("--probes", help="Your own probes (JSONL); default: the shipped 72.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Judge at most this many probes, spread across kinds.")
    ] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="openai backend endpoint.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Probes judged at once.")] = 4,
    timeout: Annotated[float, typer.Option("--timeout", min=0.0, help=_TIMEOUT_HELP)] = 120.0,
) -> None:
    """Measure a judge on probes with known flaws: accuracy, position and length bias.

    Each probe (a context, a good reply, a reply with one known flaw) is judged in both
    orders. Results go to the `metrics` table; `dramaturg run` notes judges never calibrated.

    Example:  dramaturg calibrate --judge-model openai:qwen2.5-coder-1.5b --base-url http://127.0.0.1:8080/v1
    """
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dramaturg._calibrate import CalibrationRun, run_calibration

    settings = CalibrationRun(
        judge=judge_model,
        critic=critic_model,
        margin=margin,
        min_margin=min_margin,
        probes=str(probes) if probes else None,
        limit=limit,
        base_url=base_url,
        concurrency=concurrency,
        timeout_s=timeout,
    )
    progress = Progress(
        TextColumn("[bold]probes"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    task = progress.add_task("probes", total=None)
    with progress, _exit_codes():
        calibration_id, report, calls = asyncio.run(
            run_calibration(
                settings,
                db,
                on_start=lambda n: progress.update(task, total=n),
                on_probe=lambda: progress.update(task, advance=1),
            )
        )
    _print_calibration(report)
    out.print(
        f"calls     {calls.calls} model calls, {calls.cache_hits} from cache; stored as {calibration_id}",
        highlight=False,
        soft_wrap=True,
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _print_calibration(report: CalibrationReport) -> None:
    from rich import box
    from rich.table import Table

    n = len(report.results)
    verdicts = 2 * n
    longer, shorter = report.length_bias()
    consistent = sum(r.consistent for r in report.results)
    rule = "both orders agree" + (
        f", critic margin >= {report.min_margin:g}" if report.min_margin is not None else ""
    )
    rows = [
        (
            "judge",
            f"{safe(report.judge)} on {n} probes ({safe(report.probe_set)}), judged in both orders",
        ),
        (
            "accuracy",
            f"{_pct(report.accuracy())}  ({sum(v == 'good' for r in report.results for v in r.verdicts)}"
            f"/{verdicts} verdicts picked the good reply)",
        ),
        (
            "position",
            f"{_pct(report.position_consistency)}  consistent ({consistent}/{n} probes judged alike in both "
            f"orders; {n - consistent} flipped with the order or failed)",
        ),
        (
            "length",
            f"accuracy {_pct(longer)} when the flawed reply is longer, {_pct(shorter)} when it is shorter",
        ),
        ("ties", f"{_pct(report.tie_rate)} of verdicts"),
        ("failures", f"{report.parse_failures}/{verdicts} verdicts did not parse"),
        (
            "kept",
            f"accuracy {_pct(report.survivor_accuracy)} on {len(report.survivors)}/{n} "
            "probes a run would pair "
            f"(coverage {_pct(report.coverage)}; {rule})",
        ),
    ]
    for label, value in rows:
        # Run ids, paths and model names are user text: printed literally, never as markup.
        out.print(f"{label:<9} {plain(value)}", markup=False, highlight=False, soft_wrap=True)
    table = Table("flaw kind", "probes", "accuracy", "consistent", "kept", box=box.SIMPLE_HEAD)
    for kind, results in report.by_kind().items():
        kept = [r for r in results if r.survives(report.min_margin)]
        table.add_row(
            safe(kind),
            str(len(results)),
            _pct(report.accuracy(results)),
            f"{sum(r.consistent for r in results)}/{len(results)}",
            f"{sum(r.good_first == 'good' for r in kept)}/{len(kept)} right",
        )
    out.print(table)


@app.command("scenarios")
def scenarios_command() -> None:
    """List the built-in scenarios."""
    from dramaturg.scenarios import BUILTIN_SCENARIOS, load_scenario

    width = max(map(len, BUILTIN_SCENARIOS))
    for name, module in BUILTIN_SCENARIOS.items():
        description = _declared_description(module)
        if description is None:
            description = load_scenario(name).scenario.description
        out.print(f"{name:<{width}}  {description}", highlight=False, soft_wrap=True)


def _declared_description(module: str) -> str | None:
    """The literal ``description=`` of the module-level ``scenario = Scenario(...)`` in ``module``.

    Read from the source: loading a scenario validates it (its stage graph in networkx, its
    tools' schemas, a sample episode), which listing three names should not wait for. None
    when the description is not a literal; the caller loads the scenario then.
    """
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    for node in ast.parse(Path(spec.origin).read_text(encoding="utf-8")).body:
        match node:
            case (
                ast.Assign(targets=[ast.Name("scenario")], value=ast.Call(keywords=keywords))
                | ast.AnnAssign(target=ast.Name("scenario"), value=ast.Call(keywords=keywords))
            ):
                for keyword in keywords:
                    if keyword.arg == "description" and isinstance(keyword.value, ast.Constant):
                        value = keyword.value.value
                        return value if isinstance(value, str) else None
    return None


@app.command("view")
def view_command(
    episode_id: Annotated[
        str | None, typer.Argument(help="RUN_ID/SCENARIO/INDEX; default: the latest finished episode.")
    ] = None,
    db: DbOption = Path("dramaturg.duckdb"),
) -> None:
    """Show one episode: its dialogue, with critiques and revised originals inline."""
    from dramaturg._view import load_episode_view
    from dramaturg.memory import Store

    with _exit_codes(), Store.open(db, read_only=True) as store:
        view = load_episode_view(store, episode_id)
    goal = {True: "goal met", False: "goal not met", None: "goal not judged"}[view.goal_met]
    # Every piece of stored text is data: control sequences stripped, markup escaped.
    out.print(
        f"[bold]{safe(view.episode_id)}[/]  {safe(view.scenario)} · persona {safe(view.persona)} · "
        f"{safe(view.status)} ({safe(view.termination_reason)}) · {goal} · {view.pairs} pairs",
        highlight=False,
        soft_wrap=True,
    )
    for turn in view.turns:
        flip = " [red](role flip)[/]" if turn.role_flip else ""
        origin = f" [yellow]({turn.origin})[/]" if turn.origin != "generated" else ""
        colour = "cyan" if turn.role == "user" else "green"
        out.print(
            f"[{colour}]{turn.role:>9}[/] [dim]{safe(turn.stage or '')}[/]{origin}{flip}", highlight=False
        )
        out.print(f"          {safe(turn.content)}", highlight=False, soft_wrap=True)
        if turn.original is not None:
            out.print(f"[dim]  original: {safe(turn.original)}[/]", highlight=False, soft_wrap=True)
        if turn.critique is not None:
            out.print(f"[dim]    critic: {safe(turn.critique)}[/]", highlight=False, soft_wrap=True)
        for check in turn.checks:
            colour = "red" if check.startswith("failed") else "dim"
            out.print(f"[{colour}]     check: {safe(check)}[/]", highlight=False, soft_wrap=True)


# Placeholders in `export`'s help for lists that live in the export module: see _ExportCommand.
_FORMATS = "<formats>"
_REASONS = "<reasons>"


class _ExportCommand(TyperCommand):
    """`export`, whose help lists the formats and the reasons a row is left out.

    Both lists come from the export module, which loads DuckDB and curation: they are written
    into the help when it is shown, so that building the command line, which every command
    does, stays light.
    """

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from dramaturg._export import FORMAT_HELP, LEFT_OUT_REASONS

        reasons = ", ".join(r for r in LEFT_OUT_REASONS if r != "unfinished")
        for param in self.params:
            if isinstance(param, TyperOption) and param.help:
                param.help = param.help.replace(_FORMATS, FORMAT_HELP).replace(_REASONS, reasons)
        super().format_help(ctx, formatter)


@app.command("export", cls=_ExportCommand)
def export_command(
    db: Annotated[
        Path, typer.Option("--db", help="The DuckDB file to read (its runs are curated first if needed).")
    ],
    export_format: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help=_FORMATS,
        ),
    ],
    out_file: Annotated[
        Path,
        typer.Option(
            "--out", help="The file to write: FILE.jsonl or FILE.parquet (openai, openai-dpo: .jsonl)."
        ),
    ],
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Export only this run (default: all runs).")
    ] = None,
    min_margin: Annotated[
        float | None,
        typer.Option("--min-margin", help="Pairs only: keep pairs with at least this critic margin."),
    ] = None,
    include: Annotated[
        list[str] | None,
        typer.Option(
            "--include",
            metavar="REASON",
            help="Also export rows left out for this reason (repeatable), e.g. failed_check, "
            f"duplicates, or all. Reasons: {_REASONS}.",
        ),
    ] = None,
    only_accepted: Annotated[
        bool,
        typer.Option(
            "--only-accepted",
            help="Pairs only: export just the pairs an annotator accepted (or flipped) in the viewer.",
        ),
    ] = False,
) -> None:
    """Write what passed curation, as pairs or dialogues, in the format a trainer reads.

    Formats: TRL (dpo, dpo-text, sft, trl-kto), OpenAI (openai, openai-dpo), LLaMA-Factory
    (llamafactory, llamafactory-ranking; registered in dataset_info.json next to the file),
    Axolotl (axolotl, axolotl-dpo); JSONL or Parquet by the file name (OpenAI: JSONL).

    Duplicates across the store, failed checks, unverified pairs, refusals, role flips and
    unfinished episodes are left out; the summary line counts them by reason.

    Example:  dramaturg export --db corpus.duckdb --format dpo --out pairs.parquet
    """
    from dramaturg._export import export

    try:
        summary = export(
            db,
            format=export_format,
            out=out_file,
            run_id=run_id,
            min_margin=min_margin,
            include=include or (),
            only_accepted=only_accepted,
        )
    except UserError as exc:
        raise _fail(str(exc), 2) from exc
    except DramaturgError as exc:
        raise _fail(str(exc), 1) from exc
    except KeyboardInterrupt as exc:
        raise _fail(f"interrupted; nothing was written to {out_file}", 130) from exc
    # Only the reasons that left something out: the full list is in --help.
    left_out = ", ".join(f"{reason} {rows}" for reason, rows in summary.left_out if rows)
    out.print(
        f"exported {summary.rows} {summary.format} rows to {summary.path}"
        + (f" (left out: {left_out})" if left_out else "")
        + "".join(f"; registered in {side}" for side in summary.side_files),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


RunIdOption = Annotated[
    str | None, typer.Option("--run-id", help="The run to measure (default: the latest).")
]
RefreshOption = Annotated[
    bool, typer.Option("--refresh", help="Curate again even if the stored metrics are current.")
]
ReadDbOption = Annotated[
    Path, typer.Option("--db", help="The DuckDB file; the run's metrics are computed into it when stale.")
]


# The viewer's command lives with the viewer; Starlette and uvicorn load only when it runs.
app.command("serve")(serve_command)


@app.command("stats")
def stats_command(db: ReadDbOption, run_id: RunIdOption = None, refresh: RefreshOption = False) -> None:
    """Print a run's diversity, coverage and quality metrics, its duplicates and filtered rows.

    When the run's metrics are missing or older than its data, the run is curated first:
    duplicates marked, filters applied and metrics written to the store (tables duplicates,
    filtered, metrics), so the numbers can also be queried with SQL.

    Example:  dramaturg stats --db corpus.duckdb
    """
    from rich import box
    from rich.table import Table

    from dramaturg._stats import stats_tables
    from dramaturg.evaluators import read_metrics

    store, run, result = _curated(db, run_id, refresh)
    try:
        metrics = read_metrics(store, run)
    finally:
        store.close()
    out.print(f"{'run':<9} {run}  {_curation_note(result, metrics)}", highlight=False, soft_wrap=True)
    for table in stats_tables(metrics):
        view = Table(
            title=table.title,
            title_justify="left",
            title_style="bold",
            box=box.SIMPLE_HEAD,
            show_edge=False,
        )
        for i, column in enumerate(table.columns):
            view.add_column(column, justify="left" if i == 0 else "right", overflow="fold")
        for row in table.rows:
            view.add_row(*row)
        out.print()
        out.print(view)
        if table.note:
            out.print(table.note, style="dim", markup=False, highlight=False)


@app.command("report")
def report_command(
    db: ReadDbOption,
    out_file: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path("report.html"),
    run_id: RunIdOption = None,
    refresh: RefreshOption = False,
) -> None:
    """Write one self-contained HTML file with a run's plots and stats tables.

    Plots are inline SVG: the file needs no network and no other file to display.

    Example:  dramaturg report --db corpus.duckdb --out report.html
    """
    from dramaturg._report import write_report

    if not out_file.parent.is_dir():
        raise _fail(f"{out_file}: the folder {out_file.parent} does not exist", 2)
    store, run, _ = _curated(db, run_id, refresh)
    try:
        plots = write_report(store, run, out_file)
    finally:
        store.close()
    out.print(
        f"wrote {out_file}: {plots} plots and the stats tables of run {run}", highlight=False, soft_wrap=True
    )


def _curated(db: Path, run_id: str | None, refresh: bool) -> tuple[Store, str, CurationResult | None]:
    """Open the store and curate the run if its metrics are stale; the caller closes the store."""
    from dramaturg.evaluators import ensure_curated
    from dramaturg.memory import Store

    if not db.exists():
        raise _fail(f"{db}: no such store (run `dramaturg run ... --db {db}` first)", 2)
    try:
        store = Store.open(db)
    except StoreError as exc:
        raise _fail(str(exc), 1) from exc
    try:
        run = run_id or store.latest_run_id()
        if run is None:
            raise _fail(f"{db}: the store holds no runs yet", 2)
        with err.status(f"curating {run} (dedup, filters, metrics)"):
            result = ensure_curated(store, run, refresh=refresh)
    except UserError as exc:
        store.close()
        raise _fail(str(exc), 2) from exc
    except DramaturgError as exc:
        store.close()
        raise _fail(str(exc), 1) from exc
    except typer.Exit:
        store.close()
        raise
    return store, run, result


def _curation_note(result: CurationResult | None, metrics: MetricSet) -> str:
    if result is not None:
        return f"(curated now in {result.elapsed_s:.1f} s)"
    stamp = max((m.computed_at for m in metrics.metrics if m.name == "curation"), default=None)
    return f"(metrics from {stamp:%Y-%m-%d %H:%M} UTC)" if stamp else ""


def main() -> None:
    # `kill` (SIGTERM) stops a command the way Ctrl-C does, so its clean-up runs: a run
    # leaves a resumable store, an export leaves no temporary file.
    signal.signal(signal.SIGTERM, _interrupt)
    app()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signal.SIGINT, frame)  # asyncio.run's own: cancels the run's task cleanly
    else:
        raise KeyboardInterrupt
