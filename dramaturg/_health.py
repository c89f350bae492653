"""Semantic failure is loud: per-role counts of replies that could not be used.

HTTP errors are the gateway's business; this is the other kind of failure, a model that
answers but not usably: critiques and judgments that do not parse or validate, turns that
fail validation, judgments that flip with the order of the replies. Every one is counted per
role and model for the run summary. When most of a role's recent replies fail, the run
stops (resumably) with one line naming the role, the model and a sample reply, instead of
paying for a corpus of failures.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from dramaturg._errors import RunError
from dramaturg._model import ModelSpec, RoleName
from dramaturg.memory import Store, utcnow

__all__ = ["HEALTH_METRICS", "FailureKind", "RoleFailing", "RoleHealth", "record_health_metrics"]

# The metrics a run writes about its own failures (curation writes the others).
HEALTH_METRICS = (
    "rejected_turn_share",
    "critiques_failed_share",
    "judgments_failed_share",
    "judgments_position_inconsistent",
)

FailureKind = Literal["parse_failed", "turn_rejected", "position_inconsistent"]

_TURN_ROLES: dict[str, RoleName] = {
    "user": "user_simulator",
    "assistant": "assistant",
    "revision": "assistant",
}


class RoleFailing(RunError):
    """Most recent replies of one role were unusable: stop the run, resumable."""

    def __init__(self, role: RoleName, model: str, failed: int, window: int, kind: str, sample: str):
        shown = " ".join(sample.split())[:160]
        what = "did not parse" if kind == "parse_failed" else "failed validation"
        super().__init__(f"{role} ({model}): {failed} of its last {window} replies {what}; e.g. {shown!r}")
        self.role = role
        self.model = model


@dataclass(slots=True)
class RoleHealth:
    """Counts unusable replies per (role, model) and trips when a role keeps failing.

    Args:
        models: which model plays a role.
        window: how many of a role's most recent replies are looked at.
        threshold: structured replies (critiques, judgments) within the window that failed to
            parse and stop the run.
        turn_threshold: generated turns within the window that failed validation and stop the
            run. Higher: a rejected turn is regenerated, so it costs a call, not the data.
    """

    models: Callable[[RoleName], ModelSpec]
    window: int = 20
    threshold: int = 12
    turn_threshold: int = 15
    replies: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: Counter[tuple[str, str, FailureKind]] = field(default_factory=Counter)
    samples: dict[tuple[str, str], str] = field(default_factory=dict)
    _recent: dict[tuple[str, str, str], deque[bool]] = field(default_factory=dict)

    def record(self, role: RoleName, ok: bool, raw: str = "", kind: FailureKind = "parse_failed") -> None:
        """Count one reply of ``role``.

        Raises:
            RoleFailing: ``threshold`` of the role's last ``window`` replies failed.
        """
        key = (role, str(self.models(role)))
        self.replies[key] += 1
        turns = kind == "turn_rejected"
        recent = self._recent.setdefault((*key, str(turns)), deque(maxlen=self.window))
        recent.append(ok)
        if ok:
            return
        self.failures[(*key, kind)] += 1
        self.samples[key] = raw
        failed = recent.count(False)
        if failed >= (self.turn_threshold if turns else self.threshold):
            raise RoleFailing(role, key[1], failed, len(recent), kind, raw)

    def record_turn(self, kind: str, ok: bool, text: str) -> None:
        """Count one generated turn (user, assistant or revision) and whether it passed."""
        self.record(_TURN_ROLES[kind], ok, text, "turn_rejected")

    def inconsistent(self, role: RoleName) -> None:
        """Count a judgment pair whose verdict flipped with the order of the replies.

        Not a failure of the reply (both parsed), so it never trips the run; the both-order
        rule already keeps such pairs out.
        """
        self.failures[(role, str(self.models(role)), "position_inconsistent")] += 1

    def by_role(self) -> list[tuple[str, str, int, dict[str, int]]]:
        """(role, model, replies, failures by kind) for every role that replied."""
        rows = []
        for (role, model), replies in sorted(self.replies.items()):
            kinds: dict[str, int] = {
                k: n for (r, m, k), n in self.failures.items() if (r, m) == (role, model)
            }
            rows.append((role, model, replies, kinds))
        return rows


def record_health_metrics(store: Store, run_id: str) -> None:
    """Write the run's semantic-failure counts to ``metrics``, per scenario, from the store.

    Read back from the tables (not this process's counters), so a resumed run's metrics
    cover every invocation.
    """
    rejected = store.sql(
        """
        SELECT e.scenario, r.reason, count(*) FROM turn_rejections r JOIN episodes e USING (episode_id)
        WHERE e.run_id = ? GROUP BY ALL ORDER BY ALL
        """,
        [run_id],
    )
    stored = dict(
        store.sql(
            "SELECT e.scenario, count(*) FROM turns t JOIN episodes e USING (episode_id) "
            "WHERE e.run_id = ? AND t.role <> 'system' GROUP BY ALL",
            [run_id],
        )
    )
    failures = store.sql(
        """
        SELECT e.scenario, 'critiques', count(*), count(*) FILTER (WHERE c.status = 'failed')
        FROM critiques c JOIN episodes e USING (episode_id) WHERE e.run_id = ? GROUP BY ALL
        UNION ALL
        SELECT e.scenario, 'judgments', count(*), count(*) FILTER (WHERE j.status = 'failed')
        FROM judgments j JOIN episodes e USING (episode_id) WHERE e.run_id = ? GROUP BY ALL
        """,
        [run_id, run_id],
    )
    inconsistent = dict(
        store.sql(
            "SELECT e.scenario, count(*) FROM pair_outcomes o JOIN episodes e USING (episode_id) "
            "WHERE e.run_id = ? AND o.outcome = 'inconsistent' GROUP BY ALL",
            [run_id],
        )
    )
    by_scenario: dict[str, dict[str, int]] = {}
    for scenario, reason, n in rejected:
        by_scenario.setdefault(scenario, {})[reason] = n
    now = utcnow()
    rows: list[list[object]] = []
    for scenario in sorted(set(stored) | set(by_scenario)):
        reasons = by_scenario.get(scenario, {})
        total = sum(reasons.values())
        generated = total + stored.get(scenario, 0)
        share = total / generated if generated else 0.0
        detail = {"rejected": reasons, "stored_turns": stored.get(scenario, 0)}
        rows.append([run_id, scenario, "rejected_turn_share", share, json.dumps(detail), now])
    for scenario, kind, total, failed in failures:
        detail = {"failed": failed, "total": total}
        rows.append(
            [
                run_id,
                scenario,
                f"{kind}_failed_share",
                failed / total if total else 0.0,
                json.dumps(detail),
                now,
            ]
        )
    for scenario, n in inconsistent.items():
        rows.append([run_id, scenario, "judgments_position_inconsistent", n, None, now])
    with store.transaction() as con:
        con.execute(
            f"DELETE FROM metrics WHERE run_id = ? AND name IN ({', '.join('?' * len(HEALTH_METRICS))})",
            [run_id, *HEALTH_METRICS],
        )
        if rows:
            con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)", rows)
