"""Detect a user simulator that slipped into the assistant's voice (a "role flip")."""

from __future__ import annotations

from dramaturg.evaluators._turns import TurnContext, role_flip_signals

__all__ = ["is_role_flip"]


def is_role_flip(user_text: str, context: TurnContext | None = None) -> bool:
    """True when a user-simulator message sounds like the assistant.

    ``context`` (the persona's name and hidden facts) sharpens the detector: a user asking
    for its own order id is the assistant talking.

    Example:
        >>> is_role_flip("How can I help you today?")
        True
        >>> is_role_flip("Can you help me get a refund?")
        False
    """
    return bool(role_flip_signals(user_text, context or TurnContext("user")))
