"""Running the viewer in the foreground over a store file (``dramaturg serve``).

uvicorn is imported only when the server starts, so importing this module stays cheap. (A live
run serves the same app on its own event loop: ``dramaturg._live``.)
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from dramaturg._errors import UserError
from dramaturg.viewer._access import StoreAccess

if TYPE_CHECKING:
    import uvicorn

__all__ = ["serve"]


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
    sock = _bind(host, port)  # first, so a busy port costs nothing
    try:
        access = ThreadStoreAccess(Store.open(db))
    except BaseException:
        sock.close()
        raise
    # While the viewer holds the store, other commands on it are refused; this file next to the
    # store lets their refusal say where the viewer is (as `dramaturg run --serve` does).
    marker = Path(f"{db}.serving")
    try:
        server, url = _server(access, host, sock)
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


def _bind(host: str, port: int) -> socket.socket:
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


def _server(access: StoreAccess, host: str, sock: socket.socket) -> tuple[uvicorn.Server, str]:
    import uvicorn

    from dramaturg.viewer._app import allowed_hosts_for, create_app

    app = create_app(access, allowed_hosts=allowed_hosts_for(host))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    shown_host = f"[{host}]" if ":" in host else host
    return uvicorn.Server(config), f"http://{shown_host}:{sock.getsockname()[1]}/"


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
