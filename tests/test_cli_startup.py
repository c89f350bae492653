"""The CLI starts light: help, the scenario list and argument errors never load the runtime.

Not timed (bench/cli_startup.py measures that): each test looks at which modules a fresh
interpreter has loaded, which decides the startup time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

# What the runtime brings: the store, the scenario DSL's graph and schemas, the agents, the
# SDKs, the web stack, and the modules of dramaturg that pull them in.
RUNTIME = (
    "duckdb",
    "numpy",
    "networkx",
    "jsonschema",
    "autogen_core",
    "autogen_agentchat",
    "openai",
    "anthropic",
    "tiktoken",
    "starlette",
    "dramaturg._config",
    "dramaturg._run",
    "dramaturg.memory._store",
    "dramaturg.scenarios._dsl",
)


def _in_fresh_python(code: str) -> Any:
    """What ``code`` prints as its last line, parsed as JSON, run in a new interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.splitlines()[-1])


def test_import_dramaturg_loads_no_runtime_and_still_offers_every_name() -> None:
    loaded, resolved = _in_fresh_python(
        f"""
        import json, sys
        import dramaturg
        loaded = sorted(m for m in {(*RUNTIME, "pydantic")!r} if m in sys.modules)
        run_config = dramaturg.RunConfig  # loads on first use
        print(json.dumps([loaded, run_config.__module__]))
        """
    )
    assert loaded == []
    assert resolved == "dramaturg._config"


def test_help_scenarios_and_argument_errors_answer_without_the_runtime() -> None:
    report = _in_fresh_python(
        f"""
        import json, sys
        from typer.testing import CliRunner
        from dramaturg._cli import app
        at_import = sorted(m for m in {(*RUNTIME, "pydantic")!r} if m in sys.modules)
        runner = CliRunner()
        results = {{
            " ".join(args): [result.exit_code, result.output]
            for args in (
                ["--help"],
                ["run", "--help"],
                ["scenarios"],
                ["run", "--episodes", "x", "support-refund"],
                ["run", "support-refund", "--no-such-option"],
            )
            for result in [runner.invoke(app, args)]
        }}
        # typer itself may import pydantic to coerce arguments: only the runtime counts here.
        loaded = sorted(m for m in {RUNTIME!r} if m in sys.modules)
        print(json.dumps({{"at_import": at_import, "loaded": loaded, "results": results}}))
        """
    )
    assert report["at_import"] == []
    assert report["loaded"] == []
    results = report["results"]
    assert results["--help"][0] == 0 and "scenarios" in results["--help"][1]
    assert results["run --help"][0] == 0 and "--episodes" in results["run --help"][1]
    code, listing = results["scenarios"]
    assert code == 0
    assert [line.split()[0] for line in listing.splitlines()] == [
        "support-refund",
        "math-tutor",
        "airline-rebooking",
    ]
    code, output = results["run --episodes x support-refund"]
    assert code == 2 and "'--episodes'" in output
    code, output = results["run support-refund --no-such-option"]
    assert code == 2 and "No such option" in output


def test_scenarios_lists_the_descriptions_the_scenarios_load_with(cli: Any) -> None:
    from dramaturg.scenarios import BUILTIN_SCENARIOS, load_scenario

    from dramaturg._cli import _declared_description

    listed = dict(line.split(maxsplit=1) for line in cli("scenarios").output.splitlines())
    for name, module in BUILTIN_SCENARIOS.items():
        description = load_scenario(name).scenario.description
        # Read from the source without loading; a built-in whose description is not a literal
        # would be loaded instead (correct, but slow), and this says so.
        assert _declared_description(module) == description, name
        assert listed[name] == description


def test_export_help_lists_every_format_and_reason(cli: Any) -> None:
    from dramaturg._export import LEFT_OUT_REASONS

    result = cli("export", "--help")
    assert result.exit_code == 0
    # Filled in when the help is shown (see _ExportCommand): no placeholder is left.
    assert "<formats>" not in result.output and "<reasons>" not in result.output
    text = " ".join(result.output.replace("│", " ").split())
    assert "See docs/exports.md." in text  # the end of FORMAT_HELP
    for reason in LEFT_OUT_REASONS:
        if reason != "unfinished":
            assert reason in text, reason
