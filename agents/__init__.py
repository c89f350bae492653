"""The role agents (user simulator, assistant, critic, verifier) and their prompts.

autogen-agentchat stays behind this package: nothing else in dramaturg imports it.
"""

from dramaturg.agents._client import GatewayChatClient
from dramaturg.agents._prompts import director_note, user_simulator_prompt
from dramaturg.agents._roles import Reply, RoleAgent

__all__ = ["GatewayChatClient", "Reply", "RoleAgent", "director_note", "user_simulator_prompt"]
