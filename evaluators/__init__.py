"""Judging what was generated: role flips, structured replies, checks, diversity, dedup, curation."""

from dramaturg.evaluators._checks import (
    CheckRunner,
    CheckSuite,
    ForkedCheckRunner,
    InlineCheckRunner,
    NamedResult,
    check_outcome,
    user_consistency,
)
from dramaturg.evaluators._curate import (
    DEFAULT_REFUSAL_PATTERN,
    CurationResult,
    FilterSettings,
    ItemKind,
    curate,
    duplicate_filter_sql,
    ensure_curated,
    filtered_filter_sql,
)
from dramaturg.evaluators._embed import Embedder, embedding_spread, local_embedder
from dramaturg.evaluators._metrics import Metric, MetricSet, read_metrics
from dramaturg.evaluators._parsing import (
    CritiqueReply,
    GoalReply,
    JudgeReply,
    critique_schema,
    parse_critique,
    parse_goal,
    parse_judgment,
    reply_schema,
)
from dramaturg.evaluators._role_flip import is_role_flip
from dramaturg.evaluators._turns import (
    REJECTION_REASONS,
    RejectionReason,
    TurnContext,
    TurnProblem,
    clean_turn,
    role_flip_signals,
    validate_turn,
)

__all__ = [
    "DEFAULT_REFUSAL_PATTERN",
    "REJECTION_REASONS",
    "CheckRunner",
    "CheckSuite",
    "CritiqueReply",
    "CurationResult",
    "Embedder",
    "FilterSettings",
    "ForkedCheckRunner",
    "GoalReply",
    "InlineCheckRunner",
    "ItemKind",
    "JudgeReply",
    "Metric",
    "MetricSet",
    "NamedResult",
    "RejectionReason",
    "TurnContext",
    "TurnProblem",
    "check_outcome",
    "clean_turn",
    "critique_schema",
    "curate",
    "duplicate_filter_sql",
    "embedding_spread",
    "ensure_curated",
    "filtered_filter_sql",
    "is_role_flip",
    "local_embedder",
    "parse_critique",
    "parse_goal",
    "parse_judgment",
    "read_metrics",
    "reply_schema",
    "role_flip_signals",
    "user_consistency",
    "validate_turn",
]
