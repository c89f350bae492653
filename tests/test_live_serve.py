"""Watching a run while it goes (issue 12): `dramaturg run --serve` serves the viewer and a
progress page from the running process, and commands that need the held store point to it."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import dramaturg_subprocess


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def page(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def finished(progress: str) -> int:
    found = re.search(r"data-field='episodes'>(\d+) of (\d+)", progress)
    assert found, progress
    return int(found.group(1))


def test_the_progress_page_counts_up_while_the_run_goes(tmp_path: Path, cli: Any) -> None:
    db, port = tmp_path / "x.duckdb", free_port()
    running = dramaturg_subprocess(
        "run", "math-tutor", "-n", "2000", "--serve", "--port", str(port), "--db", str(db)
    )
    url = f"http://127.0.0.1:{port}/live"
    try:
        seen: list[int] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(set(seen)) < 3:
            with contextlib.suppress(OSError):  # not serving yet
                seen.append(finished(page(url)))
            time.sleep(0.5)
        assert len(set(seen)) >= 3 and seen == sorted(seen), seen
        assert "math-tutor" in page(f"http://127.0.0.1:{port}/")  # the store, browsable while held
        held = cli("stats", "--db", db)
        assert held.exit_code == 1
        (line,) = held.output.strip().splitlines()
        assert f"its viewer is at {url}" in line and f"PID {running.pid}" in line
    finally:
        running.send_signal(signal.SIGINT)
        _, stderr = running.communicate(timeout=120)
    assert "interrupted; the store is intact" in stderr
    assert not Path(f"{db}.serving").exists()  # the announcement goes with the run
