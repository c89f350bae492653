"""The local web viewer (``dramaturg serve``): browse a store, review pairs, tag episodes.

The app reads and writes the store only through a :class:`StoreAccess`, so the same app
serves a store file (:class:`ThreadStoreAccess`) or a running job's store through its single
writer (:class:`WriterStoreAccess`).

Example:
    >>> from dramaturg.viewer import ThreadStoreAccess, create_app   # doctest: +SKIP
    >>> app = create_app(ThreadStoreAccess(Store.open("corpus.duckdb")))  # doctest: +SKIP
"""

from typing import TYPE_CHECKING

from dramaturg.viewer._access import StoreAccess, ThreadStoreAccess, WriterStoreAccess
from dramaturg.viewer._command import serve_command
from dramaturg.viewer._server import serve
from dramaturg.viewer._sql import EXAMPLE_QUERIES

if TYPE_CHECKING:
    from dramaturg.viewer._app import LOOPBACK_HOSTS, allowed_hosts_for, create_app

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

_WEB_STACK = frozenset({"LOOPBACK_HOSTS", "allowed_hosts_for", "create_app"})


def __getattr__(name: str) -> object:
    # Starlette and Jinja2 load on first use: the CLI imports serve_command from this package
    # for every command, and `dramaturg --help` should not pay for a web stack.
    if name in _WEB_STACK:
        from dramaturg.viewer import _app

        return getattr(_app, name)
    raise AttributeError(f"module 'dramaturg.viewer' has no attribute {name!r}")
