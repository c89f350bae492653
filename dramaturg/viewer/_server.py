"""Running the viewer in the foreground over a store file (``dramaturg serve``).

uvicorn is imported only when the server starts, so importing this module stays cheap. (A live
run serves the same app on its own event loop: ``dramaturg._live``.)
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from dramaturg._errors import UserError
from dramaturg.memory import serving_marker
from dramaturg.viewer._access import StoreAccess

if TYPE_CHECKING:
    import uvicorn
    from starlette.routing import BaseRoute

__all__ = ["bind", "serve", "viewer_server"]


def serve(
    db: Path, host: str = "127.0.0.1", port: int = 8765, *, announce: Callable[[str], None] | None = None
) -> None:
    """Serve the viewer over the store at ``db`` until interrupted (Ctrl-C or SIGTERM).

    The store is opened for writing (annotations are writes), so no run may hold it at the
    same time; a store that a run is writing is served by the run (``dramaturg run --serve``).

    Args:
        db: An existing store.
        host: The address to bind; 127.0.0.1 keeps the viewer to this machine.
        port: The port; 0 picks a free one.
        announce: Called with the viewer's URL once the port is bound.

    Raises:
        UserError: ``db`` does not exist, or the port cannot be bound.
        StoreError: the store cannot be opened (held by a run, damaged, newer).
    """
    from dramaturg.memory import Store
    from dramaturg.viewer._access import ThreadStoreAccess

    if not db.exists():
        raise UserError(f"{db}: no such store (run `dramaturg run ... --db {db}` first)")
    sock = bind(host, port)  # first, so a busy port costs nothing
    try:
        access = ThreadStoreAccess(Store.open(db))
    except BaseException:
        sock.close()
        raise
    # While the viewer holds the store, other commands on it are refused; this file next to the
    # store lets their refusal say where the viewer is (as `dramaturg run --serve` does).
    marker = serving_marker(db)
    try:
        server, url = viewer_server(access, host, sock)
        marker.write_text(url + "\n")
        if announce is not None:
            announce(url)
        with _sigterm_as_interrupt():
            server.run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn has shut down gracefully, then passed the signal on: stopping is the normal end.
        pass
    finally:
        marker.unlink(missing_ok=True)
        sock.close()
        access.close()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; binding it ourselves also tells us the port 0 picked.

    It listens at once, so a request made as soon as the URL is announced waits in the backlog
    until uvicorn accepts it, instead of being refused.
    """
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}; pass another --port") from exc
    return sock


def viewer_server(
    access: StoreAccess,
    host: str,
    sock: socket.socket,
    *,
    inside_run: bool = False,
    extra_routes: Sequence[BaseRoute] = (),
) -> tuple[uvicorn.Server, str]:
    """The viewer's server on a bound socket, and its URL.

    ``inside_run``: served from a running job (``dramaturg run --serve``): its stats pages do
    not curate (that would hold the run's writer), and the run, not uvicorn, owns Ctrl-C and
    SIGTERM (it stops resumably, then stops the viewer).
    """
    import uvicorn

    from dramaturg.viewer._app import allowed_hosts_for, create_app

    class RunOwnedSignals(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    app = create_app(
        access, allowed_hosts=allowed_hosts_for(host), curate_stats=not inside_run, extra_routes=extra_routes
    )
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    shown_host = f"[{host}]" if ":" in host else host
    server = RunOwnedSignals(config) if inside_run else uvicorn.Server(config)
    return server, f"http://{shown_host}:{sock.getsockname()[1]}/"


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the viewer the way Ctrl-C does, so the store is closed and the marker removed."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; elsewhere the caller stops us
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
