"""CLI startup: how long `dramaturg --help`, `dramaturg scenarios` and an argument error take.

Each command runs as a fresh process (`python -m dramaturg ...`, so no launcher shim is
timed) REPEAT times, round-robin so that a busy machine slows them alike; the best and the
median wall time are printed beside two baselines: `python -c pass`, the interpreter's own
start, and the `--help` of a typer app of one command, what typer and Rich cost any CLI
before it does anything. The CPU time the process used (user + system, best run) and the
number of modules it imported move less, or not at all, when other work shares the machine.
Then the import time of the CLI module (`python -X importtime`).

    python bench/cli_startup.py              # best of 5
    python bench/cli_startup.py --repeat 10

Target: each command under 0.5 s (issue 13). A loaded machine shows in the baselines, so
read the columns after them too.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

__all__ = ["COMMANDS", "import_time_ms", "imports", "main", "run_times"]

_TYPER_APP = """
import typer
app = typer.Typer(add_completion=False)
@app.command()
def run(name: str, episodes: int = 10) -> None:
    \"\"\"Run.\"\"\"
app()
"""

COMMANDS: tuple[tuple[str, list[str]], ...] = (
    ("python -c pass", ["-c", "pass"]),
    ("typer app of one command: --help", ["-c", _TYPER_APP, "--help"]),
    ("dramaturg --help", ["-m", "dramaturg", "--help"]),
    ("dramaturg scenarios", ["-m", "dramaturg", "scenarios"]),
    (
        "dramaturg run --episodes x support-refund",
        ["-m", "dramaturg", "run", "--episodes", "x", "support-refund"],
    ),
)


def run_times(commands: list[list[str]], repeat: int) -> list[list[tuple[float, float]]]:
    """(wall, CPU) seconds of each of ``repeat`` runs of ``python ARGS``, per command."""
    times: list[list[tuple[float, float]]] = [[] for _ in commands]
    for _ in range(repeat):
        for args, runs in zip(commands, times, strict=True):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([sys.executable, *args], capture_output=True, check=False)
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            runs.append((wall, cpu))
    return times


def imports(args: list[str]) -> int:
    """How many modules ``python ARGS`` imports, by `-X importtime` (one line per module)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *args], capture_output=True, text=True, check=False
    )
    return sum(line.startswith("import time:") for line in result.stderr.splitlines()) - 1  # the header


def import_time_ms(module: str) -> float:
    """Cumulative import time of ``module`` in a fresh interpreter, in ms (`-X importtime`)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in result.stderr.splitlines():
        _, _, cumulative, name = (part.strip() for part in line.replace(":", "|", 1).split("|"))
        if name == module:
            return int(cumulative) / 1000
    raise RuntimeError(f"{module} not in the import-time report")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (default: 5)")
    options = parser.parse_args()
    commands = [args for _, args in COMMANDS]
    run_times(commands, 1)  # warm the bytecode cache and the disk cache
    times = run_times(commands, options.repeat)
    python, typer = (min(wall for wall, _ in runs) for runs in times[:2])
    print(
        f"{'command':<44} {'best':>7} {'median':>7} {'- python':>9} {'- typer':>8} {'CPU':>7} {'modules':>8}"
    )
    for (label, args), runs in zip(COMMANDS, times, strict=True):
        best = min(wall for wall, _ in runs)
        median = statistics.median(wall for wall, _ in runs)
        cpu = min(cpu for _, cpu in runs)
        print(
            f"{label:<44} {best:>6.3f}s {median:>6.3f}s {best - python:>8.3f}s {best - typer:>7.3f}s "
            f"{cpu:>6.3f}s {imports(args):>8}"
        )
    print(f"\nimport dramaturg._cli: {import_time_ms('dramaturg._cli'):.0f} ms (cumulative, -X importtime)")
    print(f"import dramaturg:      {import_time_ms('dramaturg'):.0f} ms")


if __name__ == "__main__":
    main()
