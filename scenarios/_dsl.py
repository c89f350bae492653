"""The scenario DSL: what a user writes to describe a conversation worth staging."""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any

import networkx as nx
from dramaturg.scenarios._checks import DEFAULT_CHECK_TIMEOUT_S, Check, signature_problem
from dramaturg.scenarios._openings import Opening
from dramaturg.scenarios._sampling import CoverageSampler
from dramaturg.scenarios._tools import FunctionTool, SimulatedTool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

__all__ = ["EpisodeSpec", "Persona", "PlannedStage", "Scenario", "Stage", "Transition"]

VariableValue = str | int | float
Derive = Callable[[Mapping[str, VariableValue], random.Random], Mapping[str, VariableValue]]
Environment = Callable[["EpisodeSpec"], Any]
_NAME = r"^[a-z0-9][a-z0-9_\-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Persona(_Strict):
    """Who the user simulator plays.

    ``goal`` and the values of ``hidden_facts`` may hold ``{variable}`` placeholders.
    Hidden facts are revealed only when the assistant asks for them. Pools of many personas
    come from a file with :func:`~dramaturg.scenarios.read_personas`.
    """

    name: str = Field(min_length=1)
    description: str = Field(default="", description="who they are, in a sentence or two")
    traits: list[str] = Field(default_factory=list, description="e.g. impatient, polite, terse")
    mood: str = "neutral"
    goal: str = Field(min_length=1, description="what the user wants, in the second person")
    hidden_facts: dict[str, str] = Field(default_factory=dict)


class Stage(_Strict):
    """A step of the conversation, told to the user simulator as an instruction."""

    name: Annotated[str, Field(pattern=_NAME)]
    instruction: str = Field(min_length=1, description="what the user should do now (2nd person)")
    terminal: bool = False


class Transition(_Strict):
    """An edge of the stage graph. Among several edges out of a stage, one is drawn by weight."""

    source: str
    target: str
    weight: float = Field(default=1.0, gt=0)


class Scenario(_Strict):
    """A conversation to stage, many times, with sampled variation.

    Example:
        >>> from dramaturg import Persona, Scenario, Stage
        >>> s = Scenario(
        ...     name="greeting",
        ...     description="A user says hello and asks about {topic}.",
        ...     assistant_prompt="You are a helpful assistant.",
        ...     personas=[Persona(name="Ana", goal="learn about {topic}")],
        ...     variables={"topic": ["tides", "volcanoes"]},
        ...     stages=[
        ...         Stage(name="ask", instruction="Ask a question about {topic}."),
        ...         Stage(name="close", instruction="Thank the assistant.", terminal=True),
        ...     ],
        ... )
        >>> s.instantiate(7) == s.instantiate(7)
        True

    Attributes:
        variables: name → the values to sample from. In a run, each variable's values are
            covered evenly and personas are drawn without replacement (see
            :meth:`instantiate`).
        derive: optional function computing more variables from the sampled ones and the
            episode's ``random.Random`` (e.g. a math problem and its answer).
        transitions: the stage graph's edges; empty means the stages in order.
        start: the first stage; defaults to the first listed.
        max_turns: the most user turns an episode may take.
        rubric: criteria the critic scores assistant turns against.
        principles: rules every assistant turn must respect.
        checks: typed functions ``(CheckContext) -> bool | CheckResult`` run on assistant
            replies by the verifier (the math is right, the policy is respected, ...). Each
            runs in a worker process: one that raises, overruns ``check_timeout_s`` or returns
            anything but a bool or a CheckResult fails, with the reason, on that reply.
        check_timeout_s: how long one check may take on one reply.
        tools: typed functions ``(env, **arguments)`` the assistant may call (see
            :class:`~dramaturg.scenarios.FunctionTool`; their schemas come from the signature
            and the docstring), and :class:`~dramaturg.scenarios.SimulatedTool` declarations
            that the tool simulator role answers.
        environment: builds an episode's world from its spec (e.g. an orders table holding
            the persona's hidden order), so the user's facts and the tools agree. The tools'
            first argument; checks see it as ``context.environment``.
        max_tool_steps: the most rounds of tool calls one assistant turn may take before it
            must answer in text.
        tool_timeout_s: how long one call of a real tool may take; a call that overruns is
            an error result for the assistant (and in ``tool_calls``), and the episode goes on
            in the world as it was before that call.
        revise_below: critic score under which a reply is revised; the run's setting if None.
        opening: how a recipe opens each episode (seed requests, expanded topics, evolved
            requests, imported conversations to continue or to replay for SPIN); see
            :mod:`dramaturg.recipes`. None: the user simulator writes the first message.
    """

    name: Annotated[str, Field(pattern=_NAME)]
    description: str
    assistant_prompt: str = Field(min_length=1)
    personas: list[Persona] = Field(min_length=1)
    variables: dict[str, list[VariableValue]] = Field(default_factory=dict)
    derive: Derive | None = None
    stages: list[Stage] = Field(min_length=1)
    transitions: list[Transition] = Field(default_factory=list)
    start: str | None = None
    max_turns: int = Field(default=8, ge=1, le=200)
    rubric: list[str] = Field(default_factory=lambda: ["helpfulness", "correctness", "concision"])
    principles: list[str] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)
    check_timeout_s: float = Field(default=DEFAULT_CHECK_TIMEOUT_S, gt=0, le=3600)
    tools: list[SimulatedTool | Callable[..., Any]] = Field(default_factory=list)
    environment: Environment | None = None
    max_tool_steps: int = Field(default=4, ge=1, le=16)
    tool_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    _function_tools: tuple[FunctionTool | SimulatedTool, ...] = PrivateAttr(default=())
    _samplers: dict[int, CoverageSampler] = PrivateAttr(default_factory=dict)  # by run seed
    revise_below: float | None = Field(default=None, ge=1, le=10)
    opening: Opening | None = None

    @field_validator("checks")
    @classmethod
    def _callable_as_checks(cls, checks: list[Check]) -> list[Check]:
        for i, check in enumerate(checks):
            problem = signature_problem(check)
            if problem:
                name = getattr(check, "__name__", repr(check))
                raise ValueError(f"field 'checks.{i}': check {name}: {problem}")
        return checks

    @field_validator("tools")
    @classmethod
    def _described_tools(
        cls, tools: list[SimulatedTool | Callable[..., Any]]
    ) -> list[SimulatedTool | Callable[..., Any]]:
        names = set()
        for i, tool in enumerate(tools):
            try:
                name = tool.name if isinstance(tool, SimulatedTool) else FunctionTool(tool).name
            except ValueError as exc:
                raise ValueError(f"field 'tools.{i}': {exc}") from exc
            if name in names:
                raise ValueError(f"field 'tools.{i}': two tools are named {name}")
            names.add(name)
        return tools

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        names = [stage.name for stage in self.stages]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"field 'stages': stage names must be unique; repeated: {duplicates}")
        for i, edge in enumerate(self.transitions):
            for end in ("source", "target"):
                if getattr(edge, end) not in names:
                    raise ValueError(
                        f"field 'transitions.{i}.{end}': unknown stage '{getattr(edge, end)}' "
                        f"(expected one of {names})"
                    )
        if self.start is not None and self.start not in names:
            raise ValueError(f"field 'start': unknown stage '{self.start}' (expected one of {names})")
        for key, values in self.variables.items():
            if not values:
                raise ValueError(f"field 'variables.{key}': needs at least one value to sample")
        graph = self.graph()
        if not any(stage.terminal for stage in self.stages):
            raise ValueError("field 'stages': at least one stage needs terminal=True")
        for stage in self.stages:
            if not stage.terminal and graph.out_degree(stage.name) == 0:
                raise ValueError(
                    f"field 'transitions': stage '{stage.name}' is not terminal and has no way out "
                    "(add a transition from it, or mark it terminal=True)"
                )
        start = self.start or self.stages[0].name
        reachable = nx.descendants(graph, start) | {start}
        if not any(graph.nodes[n]["terminal"] for n in reachable):
            raise ValueError(f"field 'transitions': no terminal stage can be reached from '{start}'")
        # Instantiating once surfaces bad placeholders and broken derive and environment
        # functions now, at definition time, instead of in the middle of a paid run.
        self._function_tools = tuple(
            tool if isinstance(tool, SimulatedTool) else FunctionTool(tool) for tool in self.tools
        )
        spec = self.instantiate(0)
        self.build_environment(spec)
        # Seed 0 fills one persona's placeholders; a pool read from a file holds thousands,
        # and a typo in one of them would otherwise fail its episodes in the middle of a run.
        fill = _Filler(dict(spec.variables))
        for i, persona in enumerate(self.personas):
            fill(persona.goal, f"personas.{i}.goal")
            for key, value in persona.hidden_facts.items():
                fill(value, f"personas.{i}.hidden_facts.{key}")
        return self

    @property
    def function_tools(self) -> tuple[FunctionTool | SimulatedTool, ...]:
        """The tools, described and ready to validate arguments (real and simulated)."""
        return self._function_tools

    def build_environment(self, spec: EpisodeSpec) -> object:
        """A fresh world for one episode (None when the scenario has no environment)."""
        if self.environment is None:
            return None
        try:
            return self.environment(spec)
        except Exception as exc:
            raise ValueError(f"field 'environment': {type(exc).__name__}: {exc}") from exc

    def graph(self) -> nx.DiGraph:
        """The stage graph: nodes are stage names (with ``instruction``/``terminal``)."""
        graph = nx.DiGraph()
        for stage in self.stages:
            graph.add_node(stage.name, instruction=stage.instruction, terminal=stage.terminal)
        if self.transitions:
            for edge in self.transitions:
                graph.add_edge(edge.source, edge.target, weight=edge.weight)
        else:
            for before, after in zip(self.stages, self.stages[1:], strict=False):
                if not before.terminal:
                    graph.add_edge(before.name, after.name, weight=1.0)
        return graph

    def instantiate(self, seed: int, *, index: int | None = None, run_seed: int = 0) -> EpisodeSpec:
        """Sample one episode's variables, persona and stage path.

        With ``index`` (the episode's position in its run), the persona and the variables are
        chosen for coverage over the run's episodes (:class:`CoverageSampler`): personas
        without replacement, a new shuffle each time the pool is used up, and each variable's
        values evenly. Without it, they are drawn uniformly from ``seed``. ``derive`` and
        the stage path always draw from ``seed``.

        Same ``(seed, index, run_seed)``, same spec: a resumed run re-instantiates its
        episodes exactly.
        """
        rng = random.Random(f"{self.name}:{seed}")
        covered = None if index is None else self._covered(index, run_seed)
        if covered is None:
            values: dict[str, VariableValue] = {
                key: rng.choice(self.variables[key]) for key in sorted(self.variables)
            }
        else:
            values = {key: self.variables[key][covered[1][key]] for key in sorted(self.variables)}
        if self.derive is not None:
            try:
                derived = dict(self.derive(MappingProxyType(dict(values)), rng))
            except Exception as exc:
                raise ValueError(f"field 'derive': {type(exc).__name__}: {exc}") from exc
            values.update(derived)
        persona = self.personas[rng.randrange(len(self.personas)) if covered is None else covered[0]]
        fill = _Filler(values)
        graph = self.graph()
        path: list[PlannedStage] = []
        current = self.start or self.stages[0].name
        while len(path) < self.max_turns:
            node = graph.nodes[current]
            path.append(
                PlannedStage(
                    name=current,
                    instruction=fill(node["instruction"], f"stages.{current}.instruction"),
                    terminal=node["terminal"],
                )
            )
            successors = list(graph.successors(current))
            if node["terminal"] or not successors:
                break
            weights = [graph.edges[current, target]["weight"] for target in successors]
            current = rng.choices(successors, weights=weights)[0]
        return EpisodeSpec(
            scenario=self.name,
            seed=seed,
            persona=persona.name,
            description=persona.description,
            traits=tuple(persona.traits),
            mood=persona.mood,
            goal=fill(persona.goal, "personas.goal"),
            hidden_facts=tuple(
                (key, fill(value, f"personas.hidden_facts.{key}"))
                for key, value in persona.hidden_facts.items()
            ),
            variables=tuple(sorted(values.items())),
            assistant_prompt=fill(self.assistant_prompt, "assistant_prompt"),
            stage_path=tuple(path),
            max_turns=self.max_turns,
            rubric=tuple(self.rubric),
            principles=tuple(fill(p, "principles") for p in self.principles),
        )

    def _covered(self, index: int, run_seed: int) -> tuple[int, dict[str, int]]:
        """Episode ``index``'s persona and variable values, as indices, by coverage sampling."""
        sampler = self._samplers.get(run_seed)
        if sampler is None:
            sizes = {key: len(values) for key, values in self.variables.items()}
            sampler = CoverageSampler(f"{self.name}:{run_seed}", personas=len(self.personas), variables=sizes)
            self._samplers[run_seed] = sampler
        return sampler.persona(index), sampler.values(index)

    def definition(self) -> dict[str, Any]:
        """The scenario as JSON-ready data, for the store (functions by qualified name)."""
        data = self.model_dump(exclude={"derive", "checks", "tools", "environment"})
        data["derive"] = _qualified_name(self.derive) if self.derive else None
        data["checks"] = [_qualified_name(check) for check in self.checks]
        data["tools"] = [_tool_definition(tool) for tool in self.function_tools]
        data["environment"] = _qualified_name(self.environment) if self.environment else None
        # A recipe's seeds or dialogues may be thousands of rows: the store keeps their digest.
        data["opening"] = self.opening.summary() if self.opening else None
        return data


def _tool_definition(tool: FunctionTool | SimulatedTool) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
    }
    if isinstance(tool, SimulatedTool):
        definition |= {"result_schema": tool.result_schema, "simulated": True}
    return definition


def _qualified_name(fn: Callable[..., object]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


class _Filler:
    """Fills ``{variable}`` placeholders, naming the field when one is unknown."""

    def __init__(self, values: Mapping[str, VariableValue]):
        self.values = values

    def __call__(self, template: str, field: str) -> str:
        wanted = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        missing = sorted(wanted - set(self.values))
        if missing:
            known = sorted(self.values) or "none"
            raise ValueError(
                f"field '{field}': unknown placeholder {{{missing[0]}}} (variables defined: {known})"
            )
        try:
            return template.format_map(self.values)
        except (ValueError, IndexError, AttributeError) as exc:
            raise ValueError(f"field '{field}': bad placeholder syntax: {exc}") from exc


@dataclass(frozen=True, slots=True)
class PlannedStage:
    name: str
    instruction: str
    terminal: bool


@dataclass(frozen=True, slots=True)
class EpisodeSpec:
    """One instantiated episode: everything sampled from the seed, frozen."""

    scenario: str
    seed: int
    persona: str
    traits: tuple[str, ...]
    mood: str
    goal: str
    hidden_facts: tuple[tuple[str, str], ...]
    variables: tuple[tuple[str, VariableValue], ...]
    assistant_prompt: str
    stage_path: tuple[PlannedStage, ...]
    max_turns: int
    rubric: tuple[str, ...]
    principles: tuple[str, ...]
    description: str = ""  # the persona's; last, as the one field with a default

    def variable(self, name: str) -> VariableValue:
        """The value a variable took in this episode."""
        for key, value in self.variables:
            if key == name:
                return value
        raise KeyError(f"scenario '{self.scenario}' has no variable '{name}'")

    def to_json(self) -> str:
        return json.dumps(
            {
                "scenario": self.scenario,
                "seed": self.seed,
                "persona": self.persona,
                "description": self.description,
                "traits": list(self.traits),
                "mood": self.mood,
                "goal": self.goal,
                "hidden_facts": dict(self.hidden_facts),
                "variables": dict(self.variables),
                "stage_path": [stage.name for stage in self.stage_path],
                "max_turns": self.max_turns,
            },
            sort_keys=True,
        )


def slug_ok(name: str) -> bool:
    return re.match(_NAME, name) is not None
