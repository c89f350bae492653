"""Detect a user simulator that slipped into the assistant's voice (a "role flip")."""

from __future__ import annotations

import re

__all__ = ["is_role_flip"]

# Phrases an assistant says and a user almost never does. Matched case-insensitively.
_ASSISTANT_VOICE = re.compile(
    r"|".join(
        [
            r"\bhow (?:can|may) i (?:help|assist)\b",
            r"\bi(?:'d| would) be (?:happy|glad) to (?:help|assist)\b",
            r"\bis there anything else i can (?:help|do|assist)\b",
            r"\bas an ai\b",
            r"\bas a (?:helpful )?(?:ai )?assistant\b",
            r"\bi'?m (?:just )?an ai\b",
            r"\blet me know if you have any (?:other )?questions\b",
            r"\bthank you for contacting\b",
            r"^\s*(?:assistant|agent|support)\s*:",
        ]
    ),
    re.IGNORECASE,
)


def is_role_flip(user_text: str) -> bool:
    """True when a user-simulator message sounds like the assistant.

    Example:
        >>> is_role_flip("How can I help you today?")
        True
        >>> is_role_flip("Can you help me get a refund?")
        False
    """
    return _ASSISTANT_VOICE.search(user_text) is not None
