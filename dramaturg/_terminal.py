"""Text from models, scenarios and users, made safe to print on a terminal.

Model output and scenario text are data, never instructions to the terminal or to Rich: a
reply holding ``ESC[2J`` must not clear the screen, and a run id like ``r[/bold]`` must not
break (or restyle) the output.
"""

from __future__ import annotations

import re

from rich.markup import escape

__all__ = ["plain", "safe"]

# CSI and OSC sequences whole, then any other escape, then C0/C1 controls but newline and tab.
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, screen clears
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|\x1b[@-_]?"  # any other escape
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def plain(text: object) -> str:
    """``text`` without terminal control sequences (newlines and tabs stay)."""
    return _CONTROL.sub("", str(text))


def safe(text: object) -> str:
    """``text`` without control sequences and with Rich markup escaped: prints literally."""
    return escape(plain(text))
