"""``dramaturg serve``: the viewer over a store file, on this machine.

Starlette and uvicorn are imported only when the command runs, so registering the command
keeps ``dramaturg --help`` as quick as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dramaturg._errors import StoreError, UserError

__all__ = ["serve_command"]


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

    from dramaturg.viewer._server import serve  # the store and the web stack: only when it serves

    try:
        serve(db, host, port, announce=announce)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
