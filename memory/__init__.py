"""What dramaturg remembers: the DuckDB store (corpus, call cache, migrations)."""

from dramaturg.memory._migrations import MIGRATIONS, Migration
from dramaturg.memory._records import (
    CallRecord,
    CheckRow,
    CritiqueRow,
    EpisodeResult,
    EpisodeStart,
    JudgmentRow,
    PairOutcomeRow,
    PairRow,
    ReviewRows,
    RevisionRow,
    RunRecord,
    ToolCallRow,
    TurnRecord,
    TurnRejectionRow,
)
from dramaturg.memory._store import EPISODE_TABLES, CachedCall, Store, StoreWriter, utcnow

__all__ = [
    "EPISODE_TABLES",
    "MIGRATIONS",
    "CachedCall",
    "CallRecord",
    "CheckRow",
    "CritiqueRow",
    "EpisodeResult",
    "EpisodeStart",
    "JudgmentRow",
    "Migration",
    "PairOutcomeRow",
    "PairRow",
    "ReviewRows",
    "RevisionRow",
    "RunRecord",
    "Store",
    "StoreWriter",
    "ToolCallRow",
    "TurnRecord",
    "TurnRejectionRow",
    "utcnow",
]
