"""``dramaturg serve``: the viewer over a store file, on this machine.

Starlette and uvicorn are imported only when the command runs, so registering the command
keeps ``dramaturg --help`` as quick as before.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from dramaturg._errors import StoreError, UserError

__all__ = ["serve", "serve_command"]


def serve(
    db: Path, host: str = "127.0.0.1", port: int = 8765, *, announce: Callable[[str], None] | None = None
) -> None:
    """Serve the viewer over the store at ``db`` until interrupted (Ctrl-C or SIGTERM).

    The store is opened for writing (annotations are writes), so no run may hold it at the
    same time; ``dramaturg run ... --serve`` serves a store that a run is writing.

    Args:
        db: An existing store.
        host: The address to bind; 127.0.0.1 keeps the viewer to this machine.
        port: The port; 0 picks a free one.
        announce: Called with the viewer's URL once the port is bound.

    Raises:
        UserError: ``db`` does not exist.
        StoreError: the store cannot be opened (held by a run, damaged, newer).
    """
    import uvicorn

    from dramaturg.memory import Store
    from dramaturg.viewer._access import ThreadStoreAccess
    from dramaturg.viewer._app import allowed_hosts_for, create_app

    if not db.exists():
        raise UserError(f"{db}: no such store (run `dramaturg run ... --db {db}` first)")
    # Bind before opening the store, so a busy port costs nothing; binding ourselves also
    # tells us the port that 0 picked.
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}; pass another --port") from exc
    access = ThreadStoreAccess(Store.open(db))
    # While the viewer holds the store, other commands are refused; this file next to the store
    # lets their refusal say where the viewer is (as `dramaturg run --serve` does).
    marker = Path(f"{db}.serving")
    try:
        app = create_app(access, allowed_hosts=allowed_hosts_for(host))
        shown_host = f"[{host}]" if ":" in host else host
        url = f"http://{shown_host}:{sock.getsockname()[1]}/"
        marker.write_text(url + "\n")
        if announce is not None:
            announce(url)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        with _sigterm_as_interrupt():
            uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn has shut down gracefully, then passed the signal on: stopping is the normal end.
        pass
    finally:
        marker.unlink(missing_ok=True)
        sock.close()
        access.close()


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


def serve_command(
    db: Annotated[Path, typer.Option("--db", help="The DuckDB file to browse and annotate.")],
    host: Annotated[
        str,
        typer.Option(help="Address to listen on; the default keeps the viewer to this machine."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free one).")] = 8765,
) -> None:
    """Browse a store in a web browser: runs, episodes with critiques, diffs and checks, pairs, stats, SQL.

    Accept, reject or flip pairs and tag episodes; the verdicts go to the store's annotations
    table. Pages are served from this machine only (127.0.0.1) unless --host says otherwise.

    Example:  dramaturg serve --db corpus.duckdb
    """

    def announce(url: str) -> None:
        typer.echo(f"serving {db} at {url} (Ctrl-C to stop)")
        if host not in ("127.0.0.1", "localhost", "::1"):
            typer.echo(
                f"note: listening on {host}: whoever reaches it can read and annotate the store", err=True
            )

    try:
        serve(db, host, port, announce=announce)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
