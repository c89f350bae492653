"""The shipped judge-calibration probe set: shape, coverage and length balance.

Each probe pairs a good reply with a flawed one (one flaw of a named kind). The calibration
measures whether the judge prefers the good reply, and whether it is swayed by length, so the
file must keep the flawed reply longer in about half of the non-padding probes.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

PROBES_PATH = Path(__file__).resolve().parents[1] / "evaluators" / "probes" / "judge_probes.jsonl"
KINDS = {
    "wrong_fact",
    "omitted_fact",
    "policy_violation",
    "padding",
    "wrong_language_or_tone",
    "unsafe_advice",
}
FIELDS = {"id", "kind", "system", "conversation", "good", "flawed", "flaw"}


def _load() -> list[dict[str, Any]]:
    lines = PROBES_PATH.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


PROBES = _load()


def test_probe_count_and_unique_ids() -> None:
    assert len(PROBES) >= 72
    ids = [p["id"] for p in PROBES]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]


def test_kinds_cover_exactly_the_six_with_at_least_twelve_each() -> None:
    counts = Counter(p["kind"] for p in PROBES)
    assert set(counts) == KINDS
    assert all(n >= 12 for n in counts.values()), counts


@pytest.mark.parametrize("probe", PROBES, ids=[p["id"] for p in PROBES])
def test_probe_is_well_formed(probe: dict[str, Any]) -> None:
    assert set(probe) == FIELDS
    for field in ("id", "kind", "system", "good", "flawed", "flaw"):
        assert isinstance(probe[field], str), field
        assert probe[field].strip(), field
    assert probe["good"].strip() != probe["flawed"].strip()

    conversation = probe["conversation"]
    assert isinstance(conversation, list)
    assert 1 <= len(conversation) <= 5
    for i, message in enumerate(conversation):
        assert set(message) == {"role", "content"}
        assert message["role"] == ("user" if i % 2 == 0 else "assistant")
        assert isinstance(message["content"], str)
        assert message["content"].strip()
    assert conversation[-1]["role"] == "user"


def test_padding_flawed_is_much_longer() -> None:
    short = [p["id"] for p in PROBES if p["kind"] == "padding" and len(p["flawed"]) < 1.8 * len(p["good"])]
    assert not short


def test_length_balance_outside_padding() -> None:
    others = [p for p in PROBES if p["kind"] != "padding"]
    longer = sum(len(p["flawed"]) > len(p["good"]) for p in others)
    share = longer / len(others)
    assert 0.35 <= share <= 0.65, f"{longer}/{len(others)} flawed replies are longer"
