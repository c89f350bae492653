"""Judging what was generated: role flips, critique parsing, checks, diversity, dedup, pairs."""

from dramaturg.evaluators._role_flip import is_role_flip

__all__ = ["is_role_flip"]
