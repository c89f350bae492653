"""How the viewer reaches the store: one async method, so the same app runs in two processes.

Under ``dramaturg serve`` the viewer owns the store and runs every read and write on one
thread of its own (:class:`ThreadStoreAccess`). Inside a running ``dramaturg run`` the run's
:class:`~dramaturg.memory.StoreWriter` owns it, as the store's single writer, and the viewer
queues its work on the writer's thread (:class:`WriterStoreAccess`). Either way the work is
serialised with everything else on the connection and never blocks the event loop.

The unit of work is a plain function of a :class:`~dramaturg.memory.Store`, not a SQL string,
because the stats page reuses what ``dramaturg stats`` and ``dramaturg report`` compute, and
those read a ``Store``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from dramaturg.memory import Store, StoreWriter

__all__ = ["StoreAccess", "ThreadStoreAccess", "WriterStoreAccess"]

T = TypeVar("T")


class StoreAccess(Protocol):
    """Runs a function of the store where the store's connection lives, and awaits its result."""

    async def call(self, fn: Callable[[Store], T]) -> T:
        """``fn(store)``, run off the event loop, serialised with every other use of the store."""
        ...


class ThreadStoreAccess:
    """The viewer's own store, used from one dedicated thread (``dramaturg serve``).

    Example:
        >>> access = ThreadStoreAccess(Store.open("corpus.duckdb"))     # doctest: +SKIP
        >>> await access.call(lambda store: store.sql("SELECT count(*) FROM episodes"))  # doctest: +SKIP
    """

    def __init__(self, store: Store):
        self.store = store
        # One thread: a DuckDB connection serves one statement at a time, and annotations must
        # land in the order they were made.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dramaturg-viewer")

    async def call(self, fn: Callable[[Store], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, self.store)

    def close(self) -> None:
        """Wait for work in progress, then close the store."""
        self._thread.shutdown(wait=True)
        self.store.close()


class WriterStoreAccess:
    """A running job's store, reached through its single writer (``dramaturg run --serve``).

    Example:
        >>> app = create_app(WriterStoreAccess(writer))                  # doctest: +SKIP
    """

    def __init__(self, writer: StoreWriter):
        self.writer = writer

    async def call(self, fn: Callable[[Store], T]) -> T:
        return await self.writer.run(fn, self.writer.store)
