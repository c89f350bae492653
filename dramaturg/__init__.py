"""dramaturg: synthesize training data by staging conversations between role agents.

Example:
    >>> import asyncio
    >>> from dramaturg import RunConfig, run
    >>> config = RunConfig(scenarios=["support-refund"], episodes=3)
    >>> summary = asyncio.run(run(config, "x.duckdb"))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dramaturg._errors import (
    BackendError,
    ConfigError,
    DramaturgError,
    ReplyParseError,
    RunError,
    ScenarioError,
    StoreError,
    UserError,
)
from dramaturg._lazy import lazy_exports

if TYPE_CHECKING:
    from dramaturg._config import (
        ExecutionOptions,
        LimitOptions,
        ModelOptions,
        ReviewOptions,
        RunConfig,
        SimBackendOptions,
    )
    from dramaturg._export import ExportFormat, ExportSummary, export
    from dramaturg._model import (
        Backend,
        GenerationParams,
        Message,
        ModelRequest,
        ModelResponse,
        ModelSpec,
        request_hash,
    )
    from dramaturg._run import EpisodeRecord, RunSummary, run, run_sync
    from dramaturg.backends import FunctionBackend, SimBackend, SimOptions
    from dramaturg.memory import Store
    from dramaturg.scenarios import (
        EpisodeSpec,
        Persona,
        Scenario,
        Stage,
        Transition,
        load_scenario,
        read_personas,
    )

__all__ = [
    "Backend",
    "BackendError",
    "ConfigError",
    "DramaturgError",
    "EpisodeRecord",
    "EpisodeSpec",
    "ExecutionOptions",
    "ExportFormat",
    "ExportSummary",
    "FunctionBackend",
    "GenerationParams",
    "LimitOptions",
    "Message",
    "ModelOptions",
    "ModelRequest",
    "ModelResponse",
    "ModelSpec",
    "Persona",
    "ReplyParseError",
    "ReviewOptions",
    "RunConfig",
    "RunError",
    "RunSummary",
    "Scenario",
    "ScenarioError",
    "SimBackend",
    "SimBackendOptions",
    "SimOptions",
    "Stage",
    "Store",
    "StoreError",
    "Transition",
    "UserError",
    "export",
    "load_scenario",
    "read_personas",
    "request_hash",
    "run",
    "run_sync",
]

# Where the rest of the public API lives. It loads on first use (PEP 562): the runtime brings
# pydantic models, DuckDB, networkx and autogen, and `import dramaturg`, which every
# `dramaturg` command pays (even `--help`), should not.
_LAZY_FROM: dict[str, tuple[str, ...]] = {
    "dramaturg._config": (
        "ExecutionOptions",
        "LimitOptions",
        "ModelOptions",
        "ReviewOptions",
        "RunConfig",
        "SimBackendOptions",
    ),
    "dramaturg._export": ("ExportFormat", "ExportSummary", "export"),
    "dramaturg._model": (
        "Backend",
        "GenerationParams",
        "Message",
        "ModelRequest",
        "ModelResponse",
        "ModelSpec",
        "request_hash",
    ),
    "dramaturg._run": ("EpisodeRecord", "RunSummary", "run", "run_sync"),
    "dramaturg.backends": ("FunctionBackend", "SimBackend", "SimOptions"),
    "dramaturg.memory": ("Store",),
    "dramaturg.scenarios": (
        "EpisodeSpec",
        "Persona",
        "Scenario",
        "Stage",
        "Transition",
        "load_scenario",
        "read_personas",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY_FROM)
