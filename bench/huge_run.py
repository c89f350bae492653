"""Lazy scheduling benchmark: a run of a hundred million episodes, watched for its first minute.

Starts ``dramaturg run support-refund -n 100000000`` on the sim backend as a real process,
samples its resident memory every second, stops it with SIGTERM (as `kill` would) and reads
the store: how many episodes finished, and how long the process took to stop.

    python bench/huge_run.py                  # 60 s
    python bench/huge_run.py --seconds 20 --episodes 1000000

Acceptance (issue 9): episodes have started within 10 s, RSS stays under 400 MB for the first
minute. The peak is printed as a ratio of that limit; the growth after the first 10 s (imports
done, episodes flowing) shows whether memory follows the episodes performed or requested.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

LIMIT_MIB = 400.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--episodes", type=int, default=100_000_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "huge.duckdb"
        command = [sys.executable, "-c", "from dramaturg._cli import main; main()", "run", "support-refund"]
        command += ["-n", str(args.episodes), "--run-id", "huge", "--db", str(db)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started = time.monotonic()
        samples: list[tuple[float, float]] = []
        while time.monotonic() - started < args.seconds:
            time.sleep(1.0)
            samples.append((time.monotonic() - started, rss_mib(process.pid)))
        process.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        process.communicate(timeout=60)
        stop_s = time.monotonic() - stopping
        con = duckdb.connect(str(db), read_only=True)
        done, first_done = con.execute(
            "SELECT count(*), min(finished_at) - min(started_at) FROM episodes WHERE status = 'done'"
        ).fetchone() or (0, None)
        con.close()

    peak = max(rss for _, rss in samples)
    warm = next((rss for t, rss in samples if t >= 10), samples[-1][1])
    first = f"{first_done.total_seconds():.2f} s" if first_done else "never"
    over_time = "  ".join(f"{t:.0f}s:{rss:.0f}" for t, rss in samples[:: max(1, len(samples) // 8)])
    rows = [
        ("episodes requested", f"{args.episodes:,}"),
        (
            "watched",
            f"{args.seconds:.0f} s; SIGTERM stopped it in {stop_s:.2f} s (exit {process.returncode})",
        ),
        ("episodes done", f"{done:,} ({done / args.seconds:.1f}/s); the first {first} after it started"),
        ("RSS over time (MiB)", over_time),
        ("RSS peak", f"{peak:.0f} MiB = {peak / LIMIT_MIB:.2f} of the {LIMIT_MIB:.0f} MiB limit"),
        (
            "RSS growth after 10 s",
            f"{samples[-1][1] - warm:+.0f} MiB ({samples[-1][1] / warm:.2f}x the RSS at 10 s)",
        ),
    ]
    for label, value in rows:
        print(f"{label:<22}{value}")


if __name__ == "__main__":
    main()
