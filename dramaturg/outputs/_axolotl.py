"""Axolotl's ``chat_template`` dataset types (docs/dataset-formats/conversation.qmd and
docs/rlhf.qmd of axolotl-ai-cloud/axolotl).

- ``axolotl``: supervised fine-tuning with ``type: chat_template``: ``messages``
  (``[{"role", "content"}]``, the ``sft`` dialogues) and, when the exported runs have tools,
  ``tools``. Every message carries ``train``, read with ``message_field_training: train``:
  true on the assistant messages to learn, false on the others and on the assistant turns a
  trainer must not learn (the turns ``openai`` writes with ``weight: 0``).
- ``axolotl-dpo``: DPO with ``type: chat_template.default``: ``messages`` (the prompt),
  ``chosen`` and ``rejected`` (one ``{"role": "assistant", "content"}`` message each). That
  type reads only each message's role and content, so pairs that carry tool calls anywhere
  are left out (reason ``tool_calls``).

Tools follow the docs' "Using tool use": an assistant message that calls tools has
``tool_calls`` (``[{"id", "type": "function", "function": {"name", "arguments"}}]``) and each
result is a ``{"role": "tool", "tool_call_id", "name", "content"}`` message. ``arguments`` and
``tools`` are JSON text, as the docs advise "to prevent `datasets` from having casting issues"
(tools of different scenarios have different parameter types); Axolotl parses both back. A
call whose arguments were not a JSON object keeps the model's text as a JSON string.
"""

from __future__ import annotations

from dramaturg.outputs._format import Format

__all__ = ["AXOLOTL", "AXOLOTL_DPO"]


def _arguments_text(text: str) -> str:
    # Axolotl json.loads string arguments, and fails on text that is not JSON.
    return (
        f"CASE WHEN json_valid({text}) AND json_type({text}) = 'OBJECT' THEN {text} "
        f"ELSE to_json({text})::VARCHAR END"
    )


def _message(m: str, *, tools: bool) -> str:
    if not tools:
        return f"{{'role': {m}.role, 'content': {m}.content, 'train': {m}.train}}"
    return (
        f"{{'role': {m}.role, 'content': {m}.content, 'tool_calls': CASE WHEN {m}.tool_calls IS NOT NULL "
        f"THEN [{{'id': c.id, 'type': 'function', 'function': {{'name': c.name, 'arguments': "
        f"{_arguments_text('c.arguments')}}}}} FOR c IN {m}.tool_calls] END, "
        f"'tool_call_id': {m}.tool_call_id, 'name': {m}.name, 'train': {m}.train}}"
    )


def _sft(tools: bool) -> str:
    tools_column = "to_json(tools)::VARCHAR AS tools, " if tools else ""
    return f"""
    SELECT [{_message("m", tools=tools)} FOR m IN messages] AS messages, {tools_column}episode_id, scenario
    FROM items ORDER BY episode_id
    """


def _dpo(tools: bool) -> str:
    # No tool calls reach here (the format leaves those pairs out).
    return """
    SELECT [{'role': m.role, 'content': m.content} FOR m IN prompt] AS messages,
           {'role': 'assistant', 'content': chosen[-1].content} AS chosen,
           {'role': 'assistant', 'content': rejected[-1].content} AS rejected,
           pair_id, episode_id, turn_idx, source, margin
    FROM items ORDER BY episode_id, turn_idx, pair_id
    """


AXOLOTL = Format(
    name="axolotl",
    consumer="Axolotl",
    summary="chat_template",
    items="dialogue",
    select=_sft,
)
AXOLOTL_DPO = Format(
    name="axolotl-dpo",
    consumer="Axolotl",
    summary="chat_template.default",
    items="pair",
    select=_dpo,
    tool_calls="nowhere",
)
