"""A run you can watch: the viewer served from the running process (``dramaturg run --serve``).

A run is the store's single writer, so nothing else may open the file while it goes; the
viewer here reads through the run's own writer thread instead (``WriterStoreAccess``), and a
progress page (``/live``) shows the run's counters as they grow. The URL is announced next to
the store (``serving_marker``), as ``dramaturg serve`` does, so ``dramaturg stats`` on the held
store can point to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from dramaturg._run import LiveRun
from dramaturg.memory import serving_marker
from dramaturg.viewer import WriterStoreAccess
from dramaturg.viewer._server import bind, viewer_server

__all__ = ["LiveViewer"]

_REFRESH_S = 2


class LiveViewer:
    """Serves the viewer and a progress page from a running job, on its event loop.

    The port is bound when the viewer is made, before the run starts: a busy port is one clear
    error that costs no model call, and port 0 takes any free one.

    Raises:
        UserError: the port cannot be bound.
    """

    def __init__(self, db: str | Path, host: str = "127.0.0.1", port: int = 8765):
        self.db = Path(db)
        self.host = host
        self._sock = bind(host, port)
        shown_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown_host}:{self._sock.getsockname()[1]}/live"
        self._live: LiveRun | None = None

    def start(self, live: LiveRun) -> None:
        """Start serving (call on the run's loop, from ``run(on_live=...)``)."""
        self._live = live
        server, _ = viewer_server(
            WriterStoreAccess(live.writer),
            self.host,
            self._sock,
            inside_run=True,
            extra_routes=[Route("/live", self._progress)],
        )
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[self._sock]))
        marker = serving_marker(self.db)
        marker.write_text(self.url + "\n")

        async def stop() -> None:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await task
            marker.unlink(missing_ok=True)
            self._sock.close()

        live.closers.append(stop)

    async def _progress(self, request: Request) -> HTMLResponse:
        assert self._live is not None  # the route exists only once the run started
        now = self._live.progress()
        rows = [
            ("run", now.run_id),
            ("episodes", f"{now.finished} of {now.total} ({now.done} done, {now.failed} failed)"),
            ("model calls", f"{now.calls:,} ({now.cache_hits:,} from cache)"),
            ("tokens", f"{now.input_tokens:,} in / {now.output_tokens:,} out"),
            ("cost", f"${now.cost_usd:.4f}"),
            ("rate", f"{now.episodes_per_min:.1f} episodes/min"),
            ("elapsed", f"{now.elapsed_s:.0f} s"),
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
