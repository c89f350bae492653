"""The local web viewer (``dramaturg serve``): browse a store, review pairs, tag episodes.

The app reads and writes the store only through a :class:`StoreAccess`, so the same app
serves a store file (:class:`ThreadStoreAccess`) or a running job's store through its single
writer (:class:`WriterStoreAccess`).

Example:
    >>> from dramaturg.viewer import ThreadStoreAccess, create_app   # doctest: +SKIP
    >>> app = create_app(ThreadStoreAccess(Store.open("corpus.duckdb")))  # doctest: +SKIP
"""

from typing import TYPE_CHECKING

from dramaturg._lazy import lazy_exports
from dramaturg.viewer._command import serve_command

if TYPE_CHECKING:
    from dramaturg.viewer._access import StoreAccess, ThreadStoreAccess, WriterStoreAccess
    from dramaturg.viewer._app import LOOPBACK_HOSTS, allowed_hosts_for, create_app
    from dramaturg.viewer._server import serve
    from dramaturg.viewer._sql import EXAMPLE_QUERIES

__all__ = [
    "EXAMPLE_QUERIES",
    "LOOPBACK_HOSTS",
    "StoreAccess",
    "ThreadStoreAccess",
    "WriterStoreAccess",
    "allowed_hosts_for",
    "create_app",
    "serve",
    "serve_command",
]

_LAZY_FROM: dict[str, tuple[str, ...]] = {
    "dramaturg.viewer._access": ("StoreAccess", "ThreadStoreAccess", "WriterStoreAccess"),
    "dramaturg.viewer._app": ("LOOPBACK_HOSTS", "allowed_hosts_for", "create_app"),
    "dramaturg.viewer._server": ("serve",),
    "dramaturg.viewer._sql": ("EXAMPLE_QUERIES",),
}
# The store (DuckDB), Starlette and Jinja2 load on first use: the CLI registers serve_command
# from this package for every command, and `dramaturg --help` should not pay for them.
__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY_FROM)
