"""Judging what was generated: role flips, structured replies, checks, diversity, dedup."""

from dramaturg.evaluators._checks import NamedResult, run_checks, user_consistency
from dramaturg.evaluators._parsing import (
    CritiqueReply,
    GoalReply,
    JudgeReply,
    parse_critique,
    parse_goal,
    parse_judgment,
)
from dramaturg.evaluators._role_flip import is_role_flip

__all__ = [
    "CritiqueReply",
    "GoalReply",
    "JudgeReply",
    "NamedResult",
    "is_role_flip",
    "parse_critique",
    "parse_goal",
    "parse_judgment",
    "run_checks",
    "user_consistency",
]
