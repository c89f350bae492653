"""The scenario DSL and the built-in scenario library.

A scenario is a short Python file that builds one :class:`Scenario`; see README.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dramaturg._lazy import lazy_exports

if TYPE_CHECKING:
    from dramaturg.scenarios._checks import DEFAULT_CHECK_TIMEOUT_S, Check, CheckContext, CheckResult, ToolUse
    from dramaturg.scenarios._dsl import EpisodeSpec, Persona, PlannedStage, Scenario, Stage, Transition
    from dramaturg.scenarios._loader import (
        BUILTIN_SCENARIOS,
        OBJECT_PREFIX,
        LoadedScenario,
        builtin_scenarios,
        load_scenario,
    )
    from dramaturg.scenarios._openings import (
        EVOL_OPERATORS,
        EvolOperator,
        EvolvedRequests,
        ImportedPrefixes,
        Opening,
        SeedRequests,
        SpinDialogues,
        TopicRequests,
    )
    from dramaturg.scenarios._personas import FACT_COLUMN_PREFIX, read_personas
    from dramaturg.scenarios._sampling import CoverageSampler
    from dramaturg.scenarios._sources import (
        SAMPLE_DIALOGUES,
        SAMPLE_DIALOGUES_SHAREGPT,
        ImportedDialogue,
        Speaker,
        read_dialogues,
        read_seeds,
    )
    from dramaturg.scenarios._tools import FunctionTool, SimulatedTool, ToolOutcome, ToolStatus

__all__ = [
    "BUILTIN_SCENARIOS",
    "DEFAULT_CHECK_TIMEOUT_S",
    "EVOL_OPERATORS",
    "FACT_COLUMN_PREFIX",
    "OBJECT_PREFIX",
    "SAMPLE_DIALOGUES",
    "SAMPLE_DIALOGUES_SHAREGPT",
    "Check",
    "CheckContext",
    "CheckResult",
    "CoverageSampler",
    "EpisodeSpec",
    "EvolOperator",
    "EvolvedRequests",
    "FunctionTool",
    "ImportedDialogue",
    "ImportedPrefixes",
    "LoadedScenario",
    "Opening",
    "Persona",
    "PlannedStage",
    "Scenario",
    "SeedRequests",
    "SimulatedTool",
    "Speaker",
    "SpinDialogues",
    "Stage",
    "ToolOutcome",
    "ToolStatus",
    "ToolUse",
    "TopicRequests",
    "Transition",
    "builtin_scenarios",
    "load_scenario",
    "read_dialogues",
    "read_personas",
    "read_seeds",
]

# Where each name lives, loaded on first use (PEP 562): the DSL brings pydantic, networkx and
# jsonschema, and `dramaturg scenarios` lists the built-ins without them.
_LAZY_FROM: dict[str, tuple[str, ...]] = {
    "dramaturg.scenarios._checks": (
        "DEFAULT_CHECK_TIMEOUT_S",
        "Check",
        "CheckContext",
        "CheckResult",
        "ToolUse",
    ),
    "dramaturg.scenarios._dsl": (
        "EpisodeSpec",
        "Persona",
        "PlannedStage",
        "Scenario",
        "Stage",
        "Transition",
    ),
    "dramaturg.scenarios._loader": (
        "BUILTIN_SCENARIOS",
        "OBJECT_PREFIX",
        "LoadedScenario",
        "builtin_scenarios",
        "load_scenario",
    ),
    "dramaturg.scenarios._openings": (
        "EVOL_OPERATORS",
        "EvolOperator",
        "EvolvedRequests",
        "ImportedPrefixes",
        "Opening",
        "SeedRequests",
        "SpinDialogues",
        "TopicRequests",
    ),
    "dramaturg.scenarios._personas": (
        "FACT_COLUMN_PREFIX",
        "read_personas",
    ),
    "dramaturg.scenarios._sampling": ("CoverageSampler",),
    "dramaturg.scenarios._sources": (
        "SAMPLE_DIALOGUES",
        "SAMPLE_DIALOGUES_SHAREGPT",
        "ImportedDialogue",
        "Speaker",
        "read_dialogues",
        "read_seeds",
    ),
    "dramaturg.scenarios._tools": (
        "FunctionTool",
        "SimulatedTool",
        "ToolOutcome",
        "ToolStatus",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY_FROM)
