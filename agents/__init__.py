"""The role agents (user simulator, assistant, critic, verifier) and their prompts.

autogen-agentchat stays behind this package: nothing else in dramaturg imports it.
"""

from dramaturg.agents._client import GatewayChatClient
from dramaturg.agents._prompts import (
    Standards,
    asked_facts,
    critic_prompt,
    critique_request,
    director_note,
    goal_request,
    judge_prompt,
    judge_request,
    retry_note,
    revision_request,
    tool_call_request,
    tool_simulator_prompt,
    transcript,
    user_simulator_prompt,
    user_turn_request,
    verifier_prompt,
)
from dramaturg.agents._roles import Reply, RoleAgent, ToolRunner, attempt_seed
from dramaturg.agents._tool_simulator import ToolSimulator

__all__ = [
    "GatewayChatClient",
    "Reply",
    "RoleAgent",
    "Standards",
    "ToolRunner",
    "ToolSimulator",
    "asked_facts",
    "attempt_seed",
    "critic_prompt",
    "critique_request",
    "director_note",
    "goal_request",
    "judge_prompt",
    "judge_request",
    "retry_note",
    "revision_request",
    "tool_call_request",
    "tool_simulator_prompt",
    "transcript",
    "user_simulator_prompt",
    "user_turn_request",
    "verifier_prompt",
]
