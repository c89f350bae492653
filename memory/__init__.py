"""What dramaturg remembers: the DuckDB store (corpus, call cache, migrations)."""

from dramaturg.memory._migrations import MIGRATIONS, Migration
from dramaturg.memory._records import CallRecord, EpisodeResult, EpisodeStart, RunRecord, TurnRecord
from dramaturg.memory._store import CachedCall, Store, StoreWriter, utcnow

__all__ = [
    "MIGRATIONS",
    "CachedCall",
    "CallRecord",
    "EpisodeResult",
    "EpisodeStart",
    "Migration",
    "RunRecord",
    "Store",
    "StoreWriter",
    "TurnRecord",
    "utcnow",
]
