"""OpenAI's fine-tuning files: JSONL, one training example per line, only the documented keys.

- ``openai``: the chat format of supervised fine-tuning (the ``FineTuneChatRequestInput`` of the
  API reference): ``{"messages": [...], "tools": [...]}``, the ``sft`` dialogues, ``tools``
  when the exported runs have tools (``[]`` on a line whose scenario has none, as OpenAI's own
  examples write it). An assistant message a trainer must not learn carries ``"weight": 0``
  (OpenAI: "To skip fine-tuning on specific assistant messages, a weight key can be added");
  the others carry no weight and are trained on, OpenAI's default. Weight 0 marks the turns a
  dialogue keeps for context although the run did not approve them: a kept reply that failed a
  check (in a dialogue exported with ``--include failed_check``) or that the critic scored
  below the run's ``--revise-below``, and an imported turn (see ``dramaturg.outputs._items``).
- ``openai-dpo``: the preference format of DPO fine-tuning
  (https://platform.openai.com/docs/guides/direct-preference-optimization):
  ``{"input": {"messages": [...], "tools": [...]}, "preferred_output": [assistant message],
  "non_preferred_output": [assistant message]}``. OpenAI trains on one assistant message per
  output, so pairs whose replies call tools are left out (reason ``tool_calls``); a prompt's
  earlier tool calls are kept in ``input.messages``.

Tool calls are written as OpenAI's API has them: ``arguments`` is the JSON text the model
wrote, a tool message has ``tool_call_id``, and each message has only the keys that apply to
it. A line has no ids (the documented keys only): lines come in the order of the ``sft`` rows
(``openai``) or of the ``dpo`` rows (``openai-dpo``, without the pairs left out for their tool
calls) of the same export.
``parallel_tool_calls`` is left out: it defaults to true, as in the requests that made the data.
"""

from __future__ import annotations

from dramaturg.outputs._format import Format

__all__ = ["OPENAI", "OPENAI_DPO"]


def _message(m: str, *, weights: bool) -> str:
    """Item message ``m`` as a JSON object of OpenAI's chat format: only the keys that apply
    (a message that calls tools has no content), plus ``weight: 0`` where ``weights`` asks and
    the message is an assistant message not to train on."""
    message = f"""CASE
        WHEN {m}.role = 'tool' THEN json_object('role', 'tool', 'tool_call_id', {m}.tool_call_id,
                                                'content', {m}.content)
        WHEN {m}.tool_calls IS NOT NULL THEN json_object('role', {m}.role, 'tool_calls', to_json([
            json_object('id', c.id, 'type', 'function',
                        'function', json_object('name', c.name, 'arguments', c.arguments))
            FOR c IN {m}.tool_calls]))
        ELSE json_object('role', {m}.role, 'content', {m}.content) END"""
    if not weights:
        return message
    return (
        f"CASE WHEN {m}.role = 'assistant' AND NOT {m}.train "
        f"""THEN json_merge_patch({message}, '{{"weight": 0}}') ELSE {message} END"""
    )


def _tools(tools: bool) -> str:
    # An empty list for a scenario without tools, as OpenAI's preference example writes it.
    return "coalesce(tools, []::JSON[])" if tools else ""


def _chat(tools: bool) -> str:
    tools_column = f", {_tools(tools)} AS tools" if tools else ""
    return f"""
    SELECT [{_message("m", weights=True)} FOR m IN messages] AS messages{tools_column}
    FROM items ORDER BY episode_id
    """


def _preference(tools: bool) -> str:
    tools_key = f", 'tools', to_json({_tools(tools)})" if tools else ""
    # No reply calls tools here (the format leaves those pairs out): each is its final message.
    prompt = f"to_json([{_message('m', weights=False)} FOR m IN prompt])"
    return f"""
    SELECT json_object('messages', {prompt}{tools_key}) AS input,
           [{{'role': 'assistant', 'content': chosen[-1].content}}] AS preferred_output,
           [{{'role': 'assistant', 'content': rejected[-1].content}}] AS non_preferred_output
    FROM items ORDER BY episode_id, turn_idx, pair_id
    """


OPENAI = Format(
    name="openai",
    consumer="OpenAI JSONL",
    summary="chat, weight 0 on unapproved turns",
    items="dialogue",
    select=_chat,
    jsonl_only=True,
)
OPENAI_DPO = Format(
    name="openai-dpo",
    consumer="OpenAI JSONL",
    summary="DPO",
    items="pair",
    select=_preference,
    tool_calls="prompt",
    jsonl_only=True,
)
