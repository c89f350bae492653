"""A run you can watch: the viewer served from the running process (``dramaturg run --serve``).

A run is the store's single writer, so nothing else may open the file while it goes; the
viewer here reads through the run's own writer thread instead (``WriterStoreAccess``), and a
progress page (``/live``) shows the run's counters as they grow. The URL is announced in a
file next to the store (``<db>.serving``), so ``dramaturg stats`` on the held store can point
to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from dramaturg._run import LiveRun
from dramaturg.viewer import WriterStoreAccess, allowed_hosts_for, create_app

__all__ = ["LiveViewer"]

_REFRESH_S = 2


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: Ctrl-C and SIGTERM belong to the run, which stops
    (resumably) and then stops the viewer."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class LiveViewer:
    """Serves the viewer and a progress page from a running job, on its event loop."""

    def __init__(self, db: str | Path, host: str = "127.0.0.1", port: int = 8765):
        self.db = Path(db)
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}/live"
        self._started = time.monotonic()
        self._live: LiveRun | None = None

    def start(self, live: LiveRun) -> None:
        """Start serving (call on the run's loop, from ``run(on_live=...)``)."""
        self._live = live
        app = create_app(
            WriterStoreAccess(live.writer), allowed_hosts=allowed_hosts_for(self.host), curate_stats=False
        )
        app.router.routes.insert(0, Route("/live", self._progress))
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="warning", lifespan="off")
        server = _Server(config)
        task = asyncio.get_running_loop().create_task(server.serve())
        self._announce()

        async def stop() -> None:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._withdraw()

        live.closers.append(stop)

    def _announce(self) -> None:
        Path(f"{self.db}.serving").write_text(self.url + "\n")

    def _withdraw(self) -> None:
        Path(f"{self.db}.serving").unlink(missing_ok=True)

    async def _progress(self, request: Request) -> HTMLResponse:
        live = self._live
        assert live is not None  # the route exists only once the run started
        summary, calls = live.summary, live.summary.calls
        finished = summary.done + summary.failed
        elapsed = time.monotonic() - self._started
        rate = finished / elapsed * 60 if elapsed else 0.0
        rows = [
            ("run", summary.run_id),
            ("episodes", f"{finished} of {live.total} ({summary.done} done, {summary.failed} failed)"),
            ("model calls", f"{calls.calls:,} ({calls.cache_hits:,} from cache)"),
            ("tokens", f"{calls.input_tokens:,} in / {calls.output_tokens:,} out"),
            ("cost", f"${calls.cost_usd:.4f}"),
            ("rate", f"{rate:.1f} episodes/min"),
            ("elapsed", f"{elapsed:.0f} s"),
        ]
        # Every value is escaped: a run id is user text.
        cells = "".join(
            f"<tr><th>{html.escape(label)}</th>"
            f"<td data-field='{html.escape(label)}'>{html.escape(value)}</td></tr>"
            for label, value in rows
        )
        page = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<meta http-equiv='refresh' content='{_REFRESH_S}'>"
            "<title>dramaturg: live run</title><link rel='stylesheet' href='/static/viewer.css'></head>"
            f"<body><main><h1>Live run</h1><table class='kv'>{cells}</table>"
            "<p><a href='/'>Browse the store</a> (runs, episodes, pairs, stats, SQL), as it is now.</p>"
            "</main></body></html>"
        )
        return HTMLResponse(page, headers={"cache-control": "no-store"})
