"""Human review kept in the store: verdicts on preference pairs and tags on episodes and pairs.

Annotations are history: a row is never updated or deleted. The verdict in force on a pair
is its latest ``accept``, ``reject`` or ``flip`` (``flip``: the rejected reply is the better
one, so the pair is exported the other way round); a later ``clear`` withdraws it. A tag
holds until an ``untag`` of the same tag. The views ``pair_verdicts`` and
``annotation_tags`` (migration 8) say the same in SQL.

Example:
    >>> with Store.open("corpus.duckdb") as store:          # doctest: +SKIP
    ...     annotate(store, "pair", pair_id, "reject", note="invents a refund policy")
    ...     pair_verdicts(store)
    {'6e347c98af7a4e69b6a4e9e953b95012': 'reject'}
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast, get_args

from dramaturg.memory._store import Store, utcnow

from dramaturg._errors import ConfigError

__all__ = [
    "ANNOTATION_ACTIONS",
    "Annotation",
    "AnnotationAction",
    "AnnotationKind",
    "PairVerdict",
    "annotate",
    "annotation_history",
    "annotation_tags",
    "pair_verdicts",
]

AnnotationKind = Literal["pair", "episode"]
AnnotationAction = Literal["accept", "reject", "flip", "clear", "tag", "untag"]
PairVerdict = Literal["accept", "reject", "flip"]

ANNOTATION_ACTIONS: tuple[AnnotationAction, ...] = get_args(AnnotationAction)
_KINDS: tuple[AnnotationKind, ...] = get_args(AnnotationKind)
_TAG_ACTIONS = ("tag", "untag")
# Long enough for a phrase, short enough to stay a label in a list of tags.
MAX_TAG_CHARS = 64
MAX_NOTE_CHARS = 4000

_ITEM_TABLES: dict[AnnotationKind, tuple[str, str]] = {
    "pair": ("preference_pairs", "pair_id"),
    "episode": ("episodes", "episode_id"),
}


@dataclass(frozen=True, slots=True)
class Annotation:
    """One row of the ``annotations`` table."""

    annotation_id: int
    kind: AnnotationKind
    item_id: str
    action: AnnotationAction
    tag: str | None
    note: str | None
    created_at: datetime


def annotate(
    store: Store,
    kind: AnnotationKind,
    item_id: str,
    action: AnnotationAction,
    *,
    tag: str | None = None,
    note: str | None = None,
) -> Annotation:
    """Record one annotation of a pair or an episode.

    Args:
        store: A store opened for writing.
        kind: ``"pair"`` (``item_id`` is a ``pair_id``) or ``"episode"`` (an ``episode_id``).
        item_id: The pair or episode; it must exist.
        action: ``accept``, ``reject``, ``flip`` or ``clear`` (pairs only: the latest one is
            the pair's verdict), ``tag`` or ``untag`` (pairs and episodes; ``tag`` required).
        tag: Free text of at most 64 characters, for ``tag`` and ``untag``.
        note: Why, in the annotator's words (optional).

    Returns:
        The stored row.

    Raises:
        ConfigError: an unknown kind or action, a verdict on an episode, a missing or
            over-long tag, or an item that does not exist.
    """
    if kind not in _KINDS:
        raise ConfigError(f"annotation kind {kind!r}: expected one of {', '.join(_KINDS)}")
    if action not in ANNOTATION_ACTIONS:
        raise ConfigError(f"annotation action {action!r}: expected one of {', '.join(ANNOTATION_ACTIONS)}")
    if kind == "episode" and action not in _TAG_ACTIONS:
        raise ConfigError(f"annotation action {action!r} is for pairs; an episode is tagged (tag, untag)")
    tag = " ".join(tag.split()) if tag else None  # one line, no stray spaces: tags are compared as text
    if action in _TAG_ACTIONS:
        if not tag:
            raise ConfigError(f"annotation action {action!r} needs a tag")
        if len(tag) > MAX_TAG_CHARS:
            raise ConfigError(f"tag of {len(tag)} characters: at most {MAX_TAG_CHARS}")
    elif tag:
        raise ConfigError(f"annotation action {action!r} takes no tag")
    note = note.strip() if note and note.strip() else None
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise ConfigError(f"note of {len(note)} characters: at most {MAX_NOTE_CHARS}")
    table, key = _ITEM_TABLES[kind]
    if not store.sql(f"SELECT count(*) FROM {table} WHERE {key} = ?", [item_id])[0][0]:
        raise ConfigError(f"no {kind} {item_id!r} in {store.path}")
    rows = store.sql(
        "INSERT INTO annotations (kind, item_id, action, tag, note, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?) RETURNING annotation_id, created_at",
        [kind, item_id, action, tag, note, utcnow()],
    )
    annotation_id, created_at = rows[0]
    return Annotation(annotation_id, kind, item_id, action, tag, note, created_at)


def pair_verdicts(store: Store, run_id: str | None = None) -> dict[str, PairVerdict]:
    """The verdict in force on every annotated pair (``pair_id`` -> accept | reject | flip).

    Pairs never judged, or whose latest verdict was cleared, are absent.
    """
    if run_id is None:
        rows = store.sql("SELECT pair_id, verdict FROM pair_verdicts")
    else:
        rows = store.sql(
            "SELECT v.pair_id, v.verdict FROM pair_verdicts v "
            "JOIN preference_pairs p USING (pair_id) WHERE p.run_id = ?",
            [run_id],
        )
    return {pair_id: cast(PairVerdict, verdict) for pair_id, verdict in rows}


def annotation_tags(store: Store, kind: AnnotationKind, item_id: str | None = None) -> dict[str, list[str]]:
    """The tags in force on items of ``kind`` (item id -> tags, sorted), or on one item."""
    query = "SELECT item_id, tag FROM annotation_tags WHERE kind = ?"
    params: list[object] = [kind]
    if item_id is not None:
        query += " AND item_id = ?"
        params.append(item_id)
    tags: dict[str, list[str]] = {}
    for item, tag in store.sql(query + " ORDER BY item_id, tag", params):
        tags.setdefault(item, []).append(tag)
    return tags


def annotation_history(
    store: Store, kind: AnnotationKind | None = None, item_id: str | None = None, *, limit: int = 200
) -> list[Annotation]:
    """Annotations, newest first, of one kind and item if given."""
    conditions: list[str] = []
    params: list[object] = []
    if kind is not None:
        conditions.append("kind = ?")
        params.append(kind)
    if item_id is not None:
        conditions.append("item_id = ?")
        params.append(item_id)
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    rows = store.sql(
        "SELECT annotation_id, kind, item_id, action, tag, note, created_at FROM annotations "
        f"{where}ORDER BY annotation_id DESC LIMIT ?",
        [*params, limit],
    )
    return [
        Annotation(number, cast(AnnotationKind, k), item, cast(AnnotationAction, action), tag, note, at)
        for number, k, item, action, tag, note, at in rows
    ]
