"""The role agents (user simulator, assistant, critic, verifier) and their prompts.

autogen-agentchat stays behind this package: nothing else in dramaturg imports it.
"""

from dramaturg.agents._client import GatewayChatClient
from dramaturg.agents._prompts import (
    critic_prompt,
    critique_request,
    director_note,
    goal_request,
    judge_prompt,
    judge_request,
    revision_request,
    transcript,
    user_simulator_prompt,
    verifier_prompt,
)
from dramaturg.agents._roles import Reply, RoleAgent

__all__ = [
    "GatewayChatClient",
    "Reply",
    "RoleAgent",
    "critic_prompt",
    "critique_request",
    "director_note",
    "goal_request",
    "judge_prompt",
    "judge_request",
    "revision_request",
    "transcript",
    "user_simulator_prompt",
    "verifier_prompt",
]
