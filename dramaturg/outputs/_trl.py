"""Hugging Face TRL's dataset formats (https://huggingface.co/docs/trl/dataset_formats).

- ``dpo``: the *conversational* preference type with an explicit prompt: ``prompt`` is a list
  of ``{role, content}`` messages (an optional system message, then user and assistant
  alternating, ending with a user message); ``chosen`` and ``rejected`` are each a list holding
  one assistant message.
- ``dpo-text``: the *standard* preference type: ``prompt``, ``chosen`` and ``rejected`` are
  plain strings; the prompt is the conversation as a transcript (see ``dramaturg.export``).
- ``sft``: the conversational language-modeling type: one ``messages`` list per finished
  episode: the assistant's system prompt, then the dialogue as it was finally performed
  (revisions in place of the originals).
- ``trl-kto``: the conversational *unpaired preference* type, for ``KTOTrainer``: ``prompt``,
  ``completion`` (the reply's messages) and ``label``; each pair gives two rows, its chosen
  reply labelled true, then its rejected reply labelled false: what TRL's own
  ``unpair_preference_dataset`` makes of the ``dpo`` rows.

Tools (https://huggingface.co/docs/trl/dataset_formats#tool-calling). When a scenario of the
exported runs gives the assistant tools, rows get a ``tools`` column holding the row's
scenario's tools as JSON schemas (``[{"type": "function", "function": {"name",
"description", "parameters"}}]``; null for a scenario without tools), and each assistant turn
that called tools becomes, per round of calls, an assistant message ``{"role": "assistant",
"content": "", "tool_calls": [{"id", "type": "function", "function": {"name",
"arguments"}}]}`` followed by one ``{"role": "tool", "content", "name", "tool_call_id"}``
message per result, then the turn's final assistant message. ``arguments`` is a JSON object,
as chat templates expect (transformers' docs: a dict, not the JSON string of OpenAI's API); a
call whose arguments were not a JSON object keeps the text the model wrote, as a JSON string.
Every message of such a file has the five keys (null where they do not apply), since a Parquet
or JSONL column has one type. ``dpo-text`` cannot hold tool calls: it leaves out the pairs that
carry some (reason ``tool_calls``).
"""

from __future__ import annotations

from dramaturg.outputs._format import Format
from dramaturg.outputs._items import arguments_object, plain

__all__ = ["DPO", "DPO_TEXT", "KTO", "SFT"]

# The one message type of a TRL file with tools.
_TOOL_MESSAGE_TYPE = (
    'STRUCT("role" VARCHAR, "content" VARCHAR, tool_calls STRUCT(id VARCHAR, "type" VARCHAR, '
    '"function" STRUCT("name" VARCHAR, arguments JSON))[], "name" VARCHAR, tool_call_id VARCHAR)'
)

# The role labels of the dpo-text transcript.
_SPEAKER = "CASE m.role WHEN 'system' THEN 'System' WHEN 'user' THEN 'User' ELSE 'Assistant' END"

_PAIR_IDS = "pair_id, episode_id, turn_idx, source, margin"
_PAIR_ORDER = "ORDER BY episode_id, turn_idx, pair_id"


def _message(m: str) -> str:
    """Item message ``m`` as TRL's tool-calling format has it: a struct of one fixed type."""
    return (
        f"{{'role': {m}.role, 'content': {m}.content, 'tool_calls': CASE WHEN {m}.tool_calls IS NOT NULL "
        f"THEN [{{'id': c.id, 'type': 'function', 'function': {{'name': c.name, 'arguments': "
        f"{arguments_object('c.arguments')}}}}} FOR c IN {m}.tool_calls] END, 'name': {m}.name, "
        f"'tool_call_id': {m}.tool_call_id}}::{_TOOL_MESSAGE_TYPE}"
    )


def _messages(column: str, *, tools: bool) -> str:
    """``column``'s messages in TRL's shape: ``{role, content}``, or the tool-calling shape."""
    return f"[{_message('m') if tools else plain('m')} FOR m IN ({column})]"


def _dpo(tools: bool) -> str:
    tools_column = "tools, " if tools else ""
    return f"""
    SELECT {_messages("prompt", tools=tools)} AS prompt, {_messages("chosen", tools=tools)} AS chosen,
           {_messages("rejected", tools=tools)} AS rejected, {tools_column}{_PAIR_IDS}
    FROM items {_PAIR_ORDER}
    """


def _dpo_text(tools: bool) -> str:
    # No tool calls reach here (the format leaves those pairs out): the replies are their final
    # messages, and every prompt message is a system, user or assistant message.
    return f"""
    SELECT array_to_string([{_SPEAKER} || ': ' || m.content FOR m IN prompt], chr(10) || chr(10)) AS prompt,
           chosen[-1].content AS chosen, rejected[-1].content AS rejected, {_PAIR_IDS}
    FROM items {_PAIR_ORDER}
    """


def _sft(tools: bool) -> str:
    tools_column = "tools, " if tools else ""
    return f"""
    SELECT {_messages("messages", tools=tools)} AS messages, {tools_column}episode_id, scenario
    FROM items ORDER BY episode_id
    """


def _kto(tools: bool) -> str:
    tools_column = "tools, " if tools else ""
    return f"""
    SELECT {_messages("prompt", tools=tools)} AS prompt,
           {_messages("CASE WHEN side.label THEN chosen ELSE rejected END", tools=tools)} AS completion,
           side.label AS label, {tools_column}{_PAIR_IDS}
    FROM items, (VALUES (true), (false)) AS side(label)
    {_PAIR_ORDER}, label DESC
    """


DPO = Format(name="dpo", consumer="TRL", summary="preference", items="pair", select=_dpo)
DPO_TEXT = Format(
    name="dpo-text",
    consumer="TRL",
    summary="preference as strings",
    items="pair",
    select=_dpo_text,
    tool_calls="nowhere",
)
SFT = Format(name="sft", consumer="TRL", summary="dialogues", items="dialogue", select=_sft)
KTO = Format(
    name="trl-kto",
    consumer="TRL",
    summary="KTO, 2 rows per pair",
    items="pair",
    select=_kto,
    rows_per_item=2,
)
