"""dramaturg: synthesize training data by staging conversations between role agents.

Example:
    >>> import asyncio
    >>> from dramaturg import RunConfig, run
    >>> config = RunConfig(scenarios=["support-refund"], episodes=3)
    >>> summary = asyncio.run(run(config, "x.duckdb"))  # doctest: +SKIP
"""

from dramaturg._config import (
    ExecutionOptions,
    LimitOptions,
    ModelOptions,
    ReviewOptions,
    RunConfig,
    SimBackendOptions,
)
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
