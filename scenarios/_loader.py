"""Find a scenario by built-in name or in a user's Python file."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dramaturg._errors import ScenarioError

if TYPE_CHECKING:
    from dramaturg.scenarios._dsl import Scenario
    from pydantic import ValidationError

__all__ = ["BUILTIN_SCENARIOS", "LoadedScenario", "builtin_scenarios", "load_scenario"]

# name -> module holding a module-level `scenario`. Built-ins use the public API only.
BUILTIN_SCENARIOS: dict[str, str] = {
    "support-refund": "dramaturg.scenarios.support_refund",
    "math-tutor": "dramaturg.scenarios.math_tutor",
    "airline-rebooking": "dramaturg.scenarios.airline_rebooking",
}


# How a run stores a Scenario object built in code: it has no file to load it from again.
OBJECT_PREFIX = "object:"
# `dramaturg run RECIPE:FILE` (see dramaturg.recipes).
RECIPE_KINDS = ("baize", "ultrachat", "evol", "continue", "spin")


@dataclass(frozen=True, slots=True)
class LoadedScenario:
    scenario: Scenario
    source: str  # 'builtin:NAME' or the resolved file path (with :NAME when given)


def builtin_scenarios() -> list[Scenario]:
    """The scenarios that ship with dramaturg."""
    return [load_scenario(name).scenario for name in BUILTIN_SCENARIOS]


def load_scenario(reference: str) -> LoadedScenario:
    """Load ``NAME`` (built-in), ``path/to/file.py`` (its one Scenario), ``file.py:NAME``, or
    ``RECIPE:FILE``, a recipe of :mod:`dramaturg.recipes` on a data file (``baize:seeds.txt``).

    Raises:
        ScenarioError: unknown name, missing file, no or several scenarios in the file, or a
            malformed scenario; the message names the file and the field.
    """
    if reference in BUILTIN_SCENARIOS:
        module = importlib.import_module(BUILTIN_SCENARIOS[reference])
        return LoadedScenario(module.scenario, f"builtin:{reference}")
    if reference.startswith(OBJECT_PREFIX):
        raise ScenarioError(
            f"scenario '{reference.removeprefix(OBJECT_PREFIX)}' was a Scenario object built in Python: "
            "it has no file to load it from; resume the run from Python, with the same RunConfig"
        )
    recipe, _, data = reference.partition(":")
    if recipe in RECIPE_KINDS and data:
        # Imported here: the recipes build on this package.
        from dramaturg.recipes import RECIPES

        if not Path(data).is_file():
            raise ScenarioError(f"{recipe}: no such file: {data}", source=data)
        return LoadedScenario(RECIPES[recipe](data), f"{recipe}:{Path(data).resolve()}")
    path_text, _, name = reference.partition(".py:")
    if name:
        path_text += ".py"
    path = Path(path_text)
    if not path_text.endswith(".py"):
        known = ", ".join(BUILTIN_SCENARIOS)
        raise ScenarioError(
            f"unknown scenario '{reference}' (built-ins: {known}; or give a file: path/to/file.py[:NAME]; "
            f"or a recipe on a data file: {', '.join(k + ':FILE' for k in RECIPE_KINDS)})"
        )
    if not path.is_file():
        raise ScenarioError(f"no such scenario file: {path}", source=str(path))
    found = _scenarios_in(path)
    source = str(path.resolve())
    if name:
        matches = [s for var, s in found if name in (var, s.name)]
        if not matches:
            have = ", ".join(s.name for _, s in found) or "none"
            raise ScenarioError(f"no scenario named '{name}' (found: {have})", source=source)
        return LoadedScenario(matches[0], f"{source}:{name}")
    unique = {id(s): s for _, s in found}
    if len(unique) != 1:
        have = ", ".join(s.name for s in unique.values()) or "none"
        raise ScenarioError(
            f"expected exactly one Scenario in the file, found {len(unique)} ({have}); "
            "pick one with FILE.py:NAME",
            source=source,
        )
    return LoadedScenario(next(iter(unique.values())), source)


def _scenarios_in(path: Path) -> list[tuple[str, Scenario]]:
    # Imported here: BUILTIN_SCENARIOS is read (by `dramaturg scenarios`) without the DSL.
    from dramaturg.scenarios._dsl import Scenario
    from pydantic import ValidationError

    module_name = "dramaturg_user_scenario_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ScenarioError("cannot be imported as a Python module", source=str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    # The module stays registered once loaded: environments and tool results built from its
    # classes are pickled by reference on their way to a check's worker process.
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        if isinstance(exc, ValidationError):
            raise _scenario_error(exc, path) from exc
        if isinstance(exc, SyntaxError):
            raise ScenarioError(f"syntax error at line {exc.lineno}: {exc.msg}", source=str(path)) from exc
        if isinstance(exc, Exception) and not isinstance(exc, ScenarioError):
            raise ScenarioError(f"failed to import: {type(exc).__name__}: {exc}", source=str(path)) from exc
        raise
    return [(var, value) for var, value in vars(module).items() if isinstance(value, Scenario)]


def _scenario_error(exc: ValidationError, path: Path) -> ScenarioError:
    error = exc.errors(include_url=False)[0]
    location = ".".join([exc.title, *(str(part) for part in error["loc"])])
    line = _line_in(exc, path)
    source = f"{path}:{line}" if line else str(path)
    message = str(error["msg"]).removeprefix("Value error, ")
    if message.startswith("field '"):
        return ScenarioError(message.replace("field '", f"field '{exc.title}.", 1), source=source)
    expected = f" (got {error['input']!r})" if error["type"] != "missing" else ""
    if len(expected) > 120:
        expected = ""
    more = f" [+{exc.error_count() - 1} more]" if exc.error_count() > 1 else ""
    return ScenarioError(f"{message}{expected}{more}", source=source, field=location)


def _line_in(exc: BaseException, path: Path) -> int | None:
    """The line of the user's file where the failing definition starts."""
    line = None
    traceback = exc.__traceback__
    target = str(path.resolve())
    while traceback is not None:
        if str(Path(traceback.tb_frame.f_code.co_filename).resolve()) == target:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line
