"""What a run is asked to do: `RunConfig`, its options grouped by concern.

The groups follow the architecture: which models play the roles (`models`), how turns are
reviewed into pairs (`review`), how hard the providers are pushed (`limits`), the
offline sim's planted failures (`sim`), and where episodes are performed (`execution`).
The CLI's flags keep their flat names (`--best-of-n`, `--rpm`), and validation reads those
names too, landing each in its group: that is how
`with_changes(rpm=60)` and a config stored flat by an earlier version read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from dramaturg._model import ModelSpec
from dramaturg.backends import BACKEND_FACTORIES
from dramaturg.scenarios import OBJECT_PREFIX, Scenario

if TYPE_CHECKING:
    from dramaturg._episode import RoleModels

__all__ = [
    "FLAT_OPTIONS",
    "ExecutionOptions",
    "LimitOptions",
    "ModelOptions",
    "ReviewOptions",
    "RunConfig",
    "SimBackendOptions",
    "option_name",
]

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class ModelOptions(BaseModel):
    """Which model plays each role (``backend:model``) and how every model samples.

    A role left unset plays ``model``.
    """

    model_config = _FROZEN

    model: str = "sim"
    user_model: str | None = None
    assistant_model: str | None = None
    critic_model: str | None = None
    judge_model: str | None = None
    tool_model: str | None = Field(default=None, description="the tool simulator's model")
    candidate_models: list[str] = Field(
        default_factory=list,
        description="best-of-n across models (UltraFeedback): one candidate from each",
    )
    temperature: float = Field(default=0.8, ge=0, le=2)
    max_tokens: int = Field(default=1024, ge=1)
    base_url: str | None = Field(default=None, description="openai backend endpoint")

    @field_validator("base_url")
    @classmethod
    def _no_credentials_in_url(cls, value: str | None) -> str | None:
        # The config is stored in runs.config; a key in the URL would be written down.
        if value and "@" in value.partition("://")[2].partition("/")[0]:
            raise ValueError("put credentials in OPENAI_API_KEY, not in the base URL")
        return value

    def role_models(self) -> RoleModels:
        # Imported here: the episode brings the agents (autogen), which a config does not need.
        from dramaturg._episode import RoleModels

        known = frozenset(BACKEND_FACTORIES)
        base = ModelSpec.parse(self.model, known_backends=known)

        def pick(spec: str | None) -> ModelSpec:
            return ModelSpec.parse(spec, known_backends=known) if spec else base

        return RoleModels(
            user_simulator=pick(self.user_model),
            assistant=pick(self.assistant_model),
            critic=pick(self.critic_model),
            verifier=pick(self.judge_model),
            tool_simulator=pick(self.tool_model),
            candidates=tuple(pick(spec) for spec in self.candidate_models),
        )


class ReviewOptions(BaseModel):
    """How generated turns are checked, critiqued, revised and made into pairs."""

    model_config = _FROZEN

    critique: bool = Field(default=True, description="critique and revise assistant turns online")
    revise_below: float = Field(default=7.0, ge=1, le=10)
    min_margin: float = Field(default=1.0, ge=0)
    best_of_n: int = Field(default=3, ge=0, le=16)
    best_of_n_turns: int = Field(default=1, ge=0)
    refine_rounds: int = Field(
        default=1, ge=1, le=8, description="critique -> revise rounds while the critic's score stays below"
    )
    principles_per_critique: int = Field(
        default=0, ge=0, description="principles sampled for each critique (Constitutional AI); 0: all"
    )
    turn_attempts: int = Field(
        default=3, ge=1, le=10, description="tries at a turn before an invalid one ends its episode"
    )


class LimitOptions(BaseModel):
    """How hard the run pushes the providers: how it runs, never what the episodes say."""

    model_config = _FROZEN

    concurrency: int = Field(default=8, ge=1, le=1024)
    rpm: float | None = Field(default=None, gt=0, description="requests per minute, for each model")
    tpm: float | None = Field(default=None, gt=0, description="tokens per minute, for each model")
    budget_usd: float | None = Field(default=None, gt=0)
    prices: str | None = Field(default=None, description="JSON file of prices per model")
    timeout_s: float = Field(default=120.0, gt=0, description="per model call")


class SimBackendOptions(BaseModel):
    """The offline sim backend's planted failures (ground truth for checks and judges)."""

    model_config = _FROZEN

    role_flip_rate: float = Field(default=0.0, ge=0, le=1)
    mistake_rate: float = Field(default=0.25, ge=0, le=1)


class ExecutionOptions(BaseModel):
    """Where the episodes are performed: how a run runs, never what its episodes say.

    ``executor="ray"`` sends them in batches to a Ray cluster (``pip install 'dramaturg[ray]'``;
    see docs/ray.md); the store stays on the machine that runs the command, its only writer.
    """

    model_config = _FROZEN

    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = Field(
        default=None, description="the Ray cluster (HOST:PORT); default RAY_ADDRESS or the local one"
    )
    shard_dir: str | None = Field(
        default=None, description="where Ray workers write their shards (default: <db>.shards)"
    )

    @field_validator("ray_address", "shard_dir")
    @classmethod
    def _ray_options_need_ray(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and info.data.get("executor") != "ray":
            raise ValueError("applies to executor 'ray' only (pass --executor ray)")
        return value


# Flat name (as the CLI flag spells it) -> (group, field).
FLAT_OPTIONS: dict[str, tuple[str, str]] = {
    **{name: ("models", name) for name in ModelOptions.model_fields},
    **{name: ("review", name) for name in ReviewOptions.model_fields},
    **{name: ("limits", name) for name in LimitOptions.model_fields},
    **{name: ("execution", name) for name in ExecutionOptions.model_fields},
    "sim_role_flip_rate": ("sim", "role_flip_rate"),
    "sim_mistake_rate": ("sim", "mistake_rate"),
}


def option_name(loc: tuple[int | str, ...]) -> str:
    """The flat name (as the CLI flag spells it) of a validation error's location."""
    path = tuple(str(part) for part in loc[:2])
    flat = {where: name for name, where in FLAT_OPTIONS.items()}
    return flat.get((path[0], path[1]), path[1]) if len(path) == 2 else path[0]


class RunConfig(BaseModel):
    """Everything a run needs. Stored (without secrets) in ``runs.config``.

    Flat names (the CLI's) are read too, each landing in its group: validating
    ``{"scenarios": [...], "best_of_n": 0}`` gives ``review.best_of_n == 0``.

    Example:
        >>> config = RunConfig(scenarios=["support-refund"], review=ReviewOptions(best_of_n=0))
        >>> config.with_changes(rpm=60).limits.rpm, config.review.best_of_n
        (60.0, 0)
    """

    model_config = _FROZEN

    # Built-in names, file paths, RECIPE:FILE references, or Scenario objects built in code
    # (stored as 'object:NAME': such a run resumes only from Python, given the objects again).
    scenarios: list[str | Scenario] = Field(min_length=1)
    episodes: int = Field(default=10, ge=1, description="episodes per scenario")
    seed: int = 0
    run_id: str | None = None
    models: ModelOptions = Field(default_factory=ModelOptions)
    review: ReviewOptions = Field(default_factory=ReviewOptions)
    limits: LimitOptions = Field(default_factory=LimitOptions)
    sim: SimBackendOptions = Field(default_factory=SimBackendOptions)
    execution: ExecutionOptions = Field(default_factory=ExecutionOptions)

    @model_validator(mode="before")
    @classmethod
    def _group_flat_options(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not FLAT_OPTIONS.keys() & data.keys():
            return data
        grouped = {key: value for key, value in data.items() if key not in FLAT_OPTIONS}
        for key in FLAT_OPTIONS.keys() & data.keys():
            group, name = FLAT_OPTIONS[key]
            current = grouped.get(group) or {}
            if isinstance(current, BaseModel):
                current = current.model_dump()
            grouped[group] = {**current, name: data[key]}
        return grouped

    @field_serializer("scenarios")
    def _scenario_references(self, scenarios: list[str | Scenario]) -> list[str]:
        return [s if isinstance(s, str) else f"{OBJECT_PREFIX}{s.name}" for s in scenarios]

    def role_models(self) -> RoleModels:
        return self.models.role_models()

    def with_changes(self, **changes: Any) -> RunConfig:
        """A validated copy with ``changes`` (flat names or groups) applied."""
        current = {name: getattr(self, name) for name in RunConfig.model_fields}
        for group in ("models", "review", "limits", "sim", "execution"):
            current[group] = current[group].model_dump()
        return RunConfig.model_validate({**current, **changes})
