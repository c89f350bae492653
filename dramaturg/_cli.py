"""The ``dramaturg`` command line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dramaturg._errors import DramaturgError, StoreError, UserError
from dramaturg._run import RunConfig, RunSummary, run
from dramaturg.scenarios import BUILTIN_SCENARIOS, load_scenario

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


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


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
) -> None:
    """Perform EPISODES episodes of each SCENARIO and store every turn and model call.

    Example:  dramaturg run support-refund math-tutor -n 20 --db corpus.duckdb
    """
    try:
        config = RunConfig(
            scenarios=scenarios,
            episodes=episodes,
            seed=seed,
            concurrency=concurrency,
            model=model,
            run_id=run_id,
            sim_role_flip_rate=sim_role_flip_rate,
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise _fail(f"option '{first['loc'][0]}': {first['msg']}", 2) from exc
    if model == "sim":
        err.print(
            "note: using the offline [bold]sim[/] backend (simulated replies; pass --model for a real one)",
            soft_wrap=True,
        )
    summary = _run_with_progress(config, db)
    _print_summary(summary)
    if summary.stopped:
        raise _fail(f"run stopped: {summary.stopped} (fix it, then `dramaturg run ... --run-id {summary.run_id}`)", 1)


def _run_with_progress(config: RunConfig, db: Path) -> RunSummary:
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

    def on_episode(status: str) -> None:
        nonlocal failed
        failed += status == "failed"
        progress.update(task, advance=1, failed=failed)

    try:
        with progress:
            return asyncio.run(run(config, db, on_episode=on_episode, on_start=on_start))
    except UserError as exc:
        raise _fail(str(exc), 2) from exc
    except StoreError as exc:
        raise _fail(str(exc), 1) from exc
    except DramaturgError as exc:
        raise _fail(f"{type(exc).__name__}: {exc}", 1) from exc
    except KeyboardInterrupt as exc:
        raise _fail(
            f"interrupted; the store is intact. Resume with: dramaturg run ... --run-id {config.run_id or '<ID>'}",
            130,
        ) from exc


def _print_summary(summary: RunSummary) -> None:
    calls = summary.calls
    skipped = f" ({summary.skipped} already done)" if summary.skipped else ""
    rows = [
        ("run", f"{summary.run_id} -> {summary.db}"),
        ("episodes", f"{summary.done} done, {summary.failed} failed{skipped}"),
        ("turns", f"{summary.turns} ({summary.role_flips} role flips)"),
        (
            "calls",
            f"{calls.calls} model calls, {calls.cache_hits} from cache, "
            f"{calls.retries} retries, {calls.failed_attempts} failed attempts",
        ),
        ("tokens", f"{calls.input_tokens:,} in / {calls.output_tokens:,} out"),
        ("elapsed", f"{summary.elapsed_s:.1f} s"),
    ]
    for label, value in rows:
        out.print(f"{label:<9} {value}", highlight=False, soft_wrap=True)


@app.command("scenarios")
def scenarios_command() -> None:
    """List the built-in scenarios."""
    for name in BUILTIN_SCENARIOS:
        scenario = load_scenario(name).scenario
        out.print(f"{name:<16} {scenario.description}", highlight=False, soft_wrap=True)


def main() -> None:
    app()
