"""Show one episode as a reader wants it: the dialogue, with critiques and revisions inline."""

from __future__ import annotations

from dataclasses import dataclass

from dramaturg._errors import ConfigError
from dramaturg.memory import Store

__all__ = ["EpisodeView", "TurnView", "load_episode_view"]


@dataclass(frozen=True, slots=True)
class TurnView:
    idx: int
    role: str
    content: str
    stage: str | None
    role_flip: bool
    critique: str | None  # "6.0: feedback" of the turn's first critique
    original: str | None  # the reply before revision, if it was revised
    checks: tuple[str, ...] = ()  # "failed name (original): why" / "passed name (revision)"
    origin: str = "generated"  # generated | imported | seed


@dataclass(frozen=True, slots=True)
class EpisodeView:
    episode_id: str
    scenario: str
    persona: str
    status: str
    termination_reason: str | None
    goal_met: bool | None
    turns: tuple[TurnView, ...]
    pairs: int


def load_episode_view(store: Store, episode_id: str | None = None) -> EpisodeView:
    """The episode ``episode_id`` (default: the most recently finished one).

    Raises:
        ConfigError: no such episode; the message lists a few that exist.
    """
    if episode_id is None:
        rows = store.sql(
            "SELECT episode_id FROM episodes WHERE status = 'done' ORDER BY finished_at DESC LIMIT 1"
        )
        if not rows:
            raise ConfigError(f"{store.path}: no finished episodes yet")
        episode_id = rows[0][0]
    head = store.sql(
        "SELECT scenario, persona, status, termination_reason, goal_met FROM episodes WHERE episode_id = ?",
        [episode_id],
    )
    if not head:
        some = [row[0] for row in store.sql("SELECT episode_id FROM episodes ORDER BY episode_id LIMIT 3")]
        raise ConfigError(f"no episode '{episode_id}' (for example: {', '.join(some) or 'none yet'})")
    critiques = {
        idx: f"{overall:.1f}: {feedback}"
        for idx, overall, feedback in store.sql(
            "SELECT turn_idx, overall, feedback FROM critiques "
            "WHERE episode_id = ? AND target = 'original' AND status = 'ok'",
            [episode_id],
        )
    }
    # Self-Refine may revise a turn several times: the first round's original is the draft.
    originals = dict(
        store.sql("SELECT turn_idx, original FROM revisions WHERE episode_id = ? AND round = 1", [episode_id])
    )
    checks: dict[int, list[str]] = {}
    for idx, target, name, passed, detail in store.sql(
        "SELECT turn_idx, target, name, passed, detail FROM checks "
        "WHERE episode_id = ? AND turn_idx IS NOT NULL ORDER BY turn_idx, target, name",
        [episode_id],
    ):
        verdict = "passed" if passed else "failed"
        checks.setdefault(idx, []).append(f"{verdict} {name} ({target})" + (f": {detail}" if detail else ""))
    turns = tuple(
        TurnView(
            idx,
            role,
            content,
            stage,
            role_flip,
            critiques.get(idx),
            originals.get(idx),
            tuple(checks.get(idx, ())),
            origin or "generated",
        )
        for idx, role, content, stage, role_flip, origin in store.sql(
            "SELECT idx, role, content, stage, role_flip, origin FROM turns "
            "WHERE episode_id = ? ORDER BY idx",
            [episode_id],
        )
    )
    pairs = store.sql("SELECT count(*) FROM preference_pairs WHERE episode_id = ?", [episode_id])[0][0]
    scenario, persona, status, reason, goal_met = head[0]
    return EpisodeView(episode_id, scenario, persona, status, reason, goal_met, turns, pairs)
