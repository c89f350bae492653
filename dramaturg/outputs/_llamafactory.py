"""LLaMA-Factory's ShareGPT format (data/README.md of hiyouga/LLaMA-Factory), registered in the
``dataset_info.json`` next to the file.

- ``llamafactory``: supervised fine-tuning: ``conversations`` (``[{"from", "value"}]``), the
  ``system`` prompt and the scenario's ``tools``, one row per finished episode.
- ``llamafactory-ranking``: preference data (``ranking: true``, for DPO, ORPO and reward
  models): the prompt as ``conversations`` (ending with the human turn), ``chosen`` and
  ``rejected`` as one ``{"from": "gpt", "value"}`` message each. LLaMA-Factory takes one message
  per reply, so pairs whose replies call tools are left out (reason ``tool_calls``).

``from`` is ``human``, ``gpt``, ``function_call`` or ``observation``: "the human and
observation should appear in odd positions, while gpt and function should appear in even
positions" (the README). A round of tool calls is one ``function_call`` message whose value is
the JSON of ``{"name", "arguments"}`` (a list of them for parallel calls), then one
``observation`` holding the round's results, joined as LLaMA-Factory's own converter of
OpenAI-style data joins consecutive tool messages. ``tools`` is the JSON text of the tools'
``{name, description, parameters}``, as in the README's example dataset (``""`` for a scenario
without tools, the converter's own default). The system prompt is its own column, not a
message. A supervised conversation must end with the assistant (LLaMA-Factory skips one of
odd length), so a dialogue that ended on a user turn leaves that turn out.

The export also writes the dataset's entry (named after the file, without its extension) into
``dataset_info.json`` in the file's folder, keeping the entries already there: point
LLaMA-Factory's ``dataset_dir`` at the folder and name the entry in ``dataset:``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from dramaturg._errors import ConfigError
from dramaturg.outputs._format import Format
from dramaturg.outputs._items import arguments_object

__all__ = ["DATASET_INFO", "LLAMAFACTORY", "LLAMAFACTORY_RANKING", "dataset_info_entry"]

DATASET_INFO = "dataset_info.json"

# The README's default tags, written out so the entry says how to read the file.
_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}

# How LLaMA-Factory's OpenAI converter joins a round's tool results into one observation.
_RESULTS_SEPARATOR = "chr(10) || '</tool_response>' || chr(10) || '<tool_response>' || chr(10)"


def _function_call(calls: str) -> str:
    # The README's `"value": "{\"name\": ..., \"arguments\": {...}}"`; its formatter reads a list
    # as parallel calls and dumps `arguments` back to JSON, so they go in as the object.
    def call(c: str) -> str:
        return f"json_object('name', {c}.name, 'arguments', {arguments_object(f'{c}.arguments')})"

    return (
        f"CASE WHEN len({calls}) = 1 THEN {call(f'{calls}[1]')}::VARCHAR "
        f"ELSE to_json([{call('c')} FOR c IN {calls}])::VARCHAR END"
    )


def _conversations(column: str, key: str) -> str:
    """SELECT ``(key, conversations)``: the messages of ``items.column`` in ShareGPT form, the
    system message left out. A round's tool results share the round number of the assistant
    message that made the calls, and are grouped into one observation."""
    return f"""
    SELECT {key}, list({{
        'from': CASE WHEN observation THEN 'observation' WHEN m.tool_calls IS NOT NULL THEN 'function_call'
                     WHEN m.role = 'user' THEN 'human' ELSE 'gpt' END,
        'value': CASE WHEN observation THEN results WHEN m.tool_calls IS NOT NULL
                      THEN {_function_call("m.tool_calls")} ELSE m.content END
        }} ORDER BY i) AS conversations
    FROM (
        SELECT {key}, min(i) AS i, first(m ORDER BY i) AS m, bool_or(m.role = 'tool') AS observation,
               string_agg(m.content, {_RESULTS_SEPARATOR} ORDER BY i) AS results
        FROM (
            SELECT {key}, i, m,
                   sum(CASE WHEN m.role = 'tool' THEN 0 ELSE 1 END)
                       OVER (PARTITION BY {key} ORDER BY i) AS round
            FROM (SELECT {key}, unnest({column}) AS m, generate_subscripts({column}, 1) AS i FROM items)
            WHERE m.role <> 'system'
        )
        GROUP BY {key}, round, m.role = 'tool'
    )
    GROUP BY {key}
    """


def _system(column: str) -> str:
    return f"coalesce(CASE WHEN {column}[1].role = 'system' THEN {column}[1].content END, '')"


def _tools() -> str:
    return "coalesce(to_json([t -> 'function' FOR t IN tools])::VARCHAR, '')"


def _sft(tools: bool) -> str:
    # A trailing user turn has no reply to learn: dropped, so the conversation has even length.
    return f"""
    SELECT CASE WHEN c.conversations[-1]."from" = 'human'
                THEN list_slice(c.conversations, 1, len(c.conversations) - 1)
                ELSE c.conversations END AS conversations,
           {_system("e.messages")} AS system, {_tools()} AS tools, e.episode_id, e.scenario
    FROM items e LEFT JOIN ({_conversations("messages", "episode_id")}) c USING (episode_id)
    ORDER BY e.episode_id
    """


def _ranking(tools: bool) -> str:
    # No reply calls tools here (the format leaves those pairs out): each is its final message.
    return f"""
    SELECT c.conversations, {_system("e.prompt")} AS system, {_tools()} AS tools,
           {{'from': 'gpt', 'value': e.chosen[-1].content}} AS chosen,
           {{'from': 'gpt', 'value': e.rejected[-1].content}} AS rejected,
           e.pair_id, e.episode_id, e.turn_idx, e.source, e.margin
    FROM items e LEFT JOIN ({_conversations("prompt", "pair_id")}) c USING (pair_id)
    ORDER BY e.episode_id, e.turn_idx, e.pair_id
    """


def dataset_info_entry(file_name: str, *, ranking: bool) -> dict[str, object]:
    """The ``dataset_info.json`` entry that registers an export named ``file_name``."""
    columns = {"messages": "conversations", "system": "system", "tools": "tools"}
    if ranking:
        columns |= {"chosen": "chosen", "rejected": "rejected"}
    ranked: dict[str, object] = {"ranking": True} if ranking else {}
    return {"file_name": file_name, "formatting": "sharegpt", **ranked, "columns": columns, "tags": _TAGS}


@dataclass(frozen=True, slots=True)
class _DatasetInfo:
    """Registers the export in the ``dataset_info.json`` of its folder (merged if it exists)."""

    ranking: bool

    def check(self, out: Path) -> None:
        _read(out.parent / DATASET_INFO)

    def write(self, out: Path) -> Path:
        path = out.parent / DATASET_INFO
        entries = _read(path)
        entries[out.stem] = dataset_info_entry(out.name, ranking=self.ranking)
        # Written whole under a temporary name, then renamed, like the export itself.
        partial = path.with_name(f".{DATASET_INFO}.partial")
        try:
            partial.write_text(json.dumps(entries, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(partial, path)
        except OSError as exc:
            raise ConfigError(f"{out} is written, but registering it in {path} failed: {exc}") from exc
        finally:
            partial.unlink(missing_ok=True)
        return path


def _read(path: Path) -> dict[str, object]:
    if not path.exists():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{path}: cannot read LLaMA-Factory's dataset list ({exc}); fix or move it"
        ) from exc
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: not a JSON object of dataset entries; fix or move it")
    return entries


LLAMAFACTORY = Format(
    name="llamafactory",
    consumer="LLaMA-Factory ShareGPT + dataset_info.json",
    summary="SFT",
    items="dialogue",
    select=_sft,
    companion=_DatasetInfo(ranking=False),
)
LLAMAFACTORY_RANKING = Format(
    name="llamafactory-ranking",
    consumer="LLaMA-Factory ShareGPT + dataset_info.json",
    summary="pairs",
    items="pair",
    select=_ranking,
    tool_calls="prompt",
    companion=_DatasetInfo(ranking=True),
)
