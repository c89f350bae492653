"""Tools a scenario gives its assistant: typed Python functions over a per-episode environment.

A tool is a plain function whose first parameter receives the episode's **environment** (the
state the scenario builds from the episode spec: an orders table holding the persona's hidden
order, a booking calendar, ...) and whose other parameters are what the assistant passes::

    def lookup_order(env: Shop, order_id: str) -> dict[str, object]:
        \"\"\"Look up an order by its id.\"\"\"
        return env.orders[order_id]

The JSON schema the model sees comes from the signature and the docstring; pydantic validates
the arguments before the function runs. A call to an unknown tool, or with arguments that fail
the schema, never runs: the assistant gets the error as the tool's result.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

__all__ = ["FunctionTool", "SimulatedTool", "ToolOutcome", "ToolStatus", "check_arguments", "tool_schema"]

ToolStatus = Literal["ok", "invalid", "error"]

# What a tool's result may hold before it is cut: a model reads it, and a runaway result
# (a whole table) would crowd out the conversation.
_MAX_RESULT_CHARS = 4000


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What one tool call did.

    Attributes:
        status: ``ok``; ``invalid`` (unknown tool, or arguments that fail the schema: the
            function never ran); or ``error`` (the function raised: a valid call whose
            result is an error, like a real API's 404).
        result: what the assistant reads back: the result as JSON text, or the error.
        error: why the call was invalid or failed; None when ``ok``.
    """

    status: ToolStatus
    result: str
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.status != "invalid"


class FunctionTool:
    """A real tool made from a typed function ``fn(env, **arguments)``.

    Raises:
        ValueError: the function has no environment parameter, a parameter without a type
            annotation, or no docstring (the model needs to be told what the tool does).
    """

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self.name: str = getattr(fn, "__name__", "")
        if not self.name.isidentifier():
            raise ValueError(f"tool {fn!r}: a tool is a named function (def NAME(env, ...))")
        doc = inspect.getdoc(fn) or ""
        self.description = doc.split("\n\n", 1)[0].strip()
        if not self.description:
            raise ValueError(f"tool {self.name}: needs a docstring saying what it does (the model reads it)")
        self.arguments = _arguments_model(fn, self.name)
        self.parameters = tool_schema(self.arguments)

    def __call__(self, env: object, arguments: str) -> ToolOutcome:
        """Validate ``arguments`` (JSON text) and run the tool on ``env``."""
        raw, invalid = _json_object(arguments)
        if invalid is not None:
            return invalid
        try:
            parsed = self.arguments.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'arguments'}: {error['msg']}"
                for error in exc.errors(include_url=False)
            )
            return ToolOutcome("invalid", f"Error: invalid arguments for {self.name}: {problems}", problems)
        values = {name: getattr(parsed, name) for name in type(parsed).model_fields}
        try:
            value = self.fn(env, **values)
        except Exception as exc:  # noqa: BLE001 - user code: an exception is the tool's error result
            message = f"{type(exc).__name__}: {exc}"
            return ToolOutcome("error", f"Error: {message}"[:_MAX_RESULT_CHARS], message)
        return ToolOutcome("ok", _as_text(value))


class SimulatedTool(BaseModel):
    """A tool declared by its schemas only, answered by the tool simulator role.

    For an API the scenario cannot run (an airline's booking system): the tool simulator's
    model writes each result as JSON, validated against ``result_schema``, consistent with
    the episode's facts, and cached like every model call.

    Attributes:
        name: the tool's name, as the model calls it.
        description: what it does, for the assistant and the simulator.
        parameters: the JSON schema of its arguments (an object schema).
        result_schema: the JSON schema of its result (an object schema).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    description: str = Field(min_length=1)
    parameters: dict[str, Any]
    result_schema: dict[str, Any]

    @field_validator("parameters", "result_schema")
    @classmethod
    def _object_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        if schema.get("type") != "object":
            raise ValueError('must be an object schema: {"type": "object", "properties": {...}}')
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON schema: {exc.message}") from exc
        return schema


def check_arguments(
    schema: dict[str, Any], arguments: str, tool: str
) -> tuple[dict[str, Any] | None, ToolOutcome | None]:
    """Parse and validate a simulated tool's arguments: (arguments, None) or (None, why not)."""
    raw, invalid = _json_object(arguments)
    if invalid is not None:
        return None, invalid
    problems = sorted(jsonschema.Draft202012Validator(schema).iter_errors(raw), key=lambda e: list(e.path))
    if problems:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.path) or 'arguments'}: {e.message}" for e in problems
        )
        return None, ToolOutcome("invalid", f"Error: invalid arguments for {tool}: {detail}", detail)
    return raw, None


def _json_object(arguments: str) -> tuple[dict[str, Any], ToolOutcome | None]:
    """The arguments a model wrote, as a JSON object, or why they are not one."""
    try:
        raw = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError as exc:
        return {}, ToolOutcome(
            "invalid", f"Error: arguments are not JSON ({exc.msg})", f"arguments not JSON: {exc.msg}"
        )
    if not isinstance(raw, dict):
        return {}, ToolOutcome("invalid", "Error: arguments must be a JSON object", "arguments not an object")
    return raw, None


def tool_schema(arguments: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of a tool's arguments, as function-calling APIs take it."""
    schema = arguments.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    schema.setdefault("properties", {})
    schema["additionalProperties"] = False
    return schema


def _arguments_model(fn: Callable[..., Any], name: str) -> type[BaseModel]:
    signature = inspect.signature(fn)
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise ValueError(f"tool {name}: its first parameter receives the environment: def {name}(env, ...)")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise ValueError(f"tool {name}: cannot read its type annotations: {exc}") from exc
    fields: dict[str, Any] = {}
    for parameter in parameters[1:]:
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ValueError(
                f"tool {name}: *{parameter.name} cannot be described to a model; name each argument"
            )
        if parameter.name not in hints:
            raise ValueError(f"tool {name}: parameter '{parameter.name}' needs a type annotation")
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (hints[parameter.name], Field(default))
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]
        f"{name}_arguments", __config__=ConfigDict(extra="forbid", strict=False), **fields
    )
    return model


def _as_text(value: object) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, BaseModel):
        text = value.model_dump_json()
    else:
        text = json.dumps(value, default=_jsonable, ensure_ascii=False, sort_keys=isinstance(value, Mapping))
    return text if len(text) <= _MAX_RESULT_CHARS else text[: _MAX_RESULT_CHARS - 20] + " ... (cut)"


def _jsonable(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)  # type: ignore[call-overload]
    return str(value)
