"""A scenario's checks are user code: whatever they do, the run goes on and says what happened.

Each test writes a scenario file the way a user would, with checks that raise, loop forever,
return the wrong type or have the wrong signature, and runs it through the CLI or the API.
"""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dramaturg.evaluators import CheckSuite, ForkedCheckRunner, InlineCheckRunner
from dramaturg.scenarios import CheckContext, CheckResult

from dramaturg import RunConfig, Scenario, ScenarioError, load_scenario, run
from dramaturg.testing import FakeAPI, FakeAPIConfig
from tests.conftest import dramaturg_subprocess, query

Cli = Callable[..., Any]

SCENARIO = """
from dramaturg import Persona, Scenario, Stage
from dramaturg.scenarios import CheckContext, CheckResult

{checks}

scenario = Scenario(
    name="triage",
    description="A caller describes symptoms to a nurse line.",
    assistant_prompt="You are a triage nurse. Send anyone with chest pain to emergency services.",
    personas=[Persona(name="Lee", goal="find out whether your {{symptom}} needs a doctor")],
    variables={{"symptom": ["chest pain", "a sore throat", "a headache"]}},
    stages=[
        Stage(name="describe", instruction="Describe your {{symptom}}."),
        Stage(name="close", instruction="Thank the nurse.", terminal=True),
    ],
    max_turns=3,
    checks=[{names}],
    check_timeout_s={timeout},
)
"""


def scenario_file(tmp_path: Path, checks: str, names: str, timeout: float = 0.5) -> Path:
    path = tmp_path / "triage.py"
    path.write_text(SCENARIO.format(checks=textwrap.dedent(checks), names=names, timeout=timeout))
    return path


BROKEN_CHECKS = """
def mentions_emergency(context: CheckContext) -> bool:
    return "emergency" in context.reply.lower()

def reads_a_missing_variable(context: CheckContext) -> bool:
    return context.spec.variable("severity") == "high"  # KeyError: no such variable

def loops_forever(context: CheckContext) -> bool:
    while True:
        pass

def says_yes(context: CheckContext):
    return "yes"
"""


def test_checks_that_raise_loop_or_return_a_string_fail_their_episode_not_the_run(
    tmp_path: Path, cli: Cli
) -> None:
    path = scenario_file(
        tmp_path, BROKEN_CHECKS, "mentions_emergency, reads_a_missing_variable, loops_forever, says_yes"
    )
    db = tmp_path / "t.duckdb"
    started = time.monotonic()
    result = cli("run", path, "-n", "3", "--best-of-n", "0", "--db", db, "--run-id", "t")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 60

    assert query(db, "SELECT status, count(*) FROM episodes GROUP BY 1") == [("done", 3)]
    outcomes = query(
        db,
        "SELECT name, bool_or(passed), count(*), min(detail), max(detail) FROM checks "
        "WHERE name <> 'goal_met' AND name <> 'user_consistent' GROUP BY name ORDER BY name",
    )
    by_name = {name: (any_passed, n, low, high) for name, any_passed, n, low, high in outcomes}
    assert set(by_name) == {"mentions_emergency", "reads_a_missing_variable", "loops_forever", "says_yes"}
    # Every reply got every check: the broken ones never stopped the others.
    assert len({n for _, n, _, _ in by_name.values()}) == 1
    assert by_name["reads_a_missing_variable"][0] is False
    assert by_name["reads_a_missing_variable"][2].startswith("raised KeyError: ")
    assert "no variable 'severity'" in by_name["reads_a_missing_variable"][2]
    assert by_name["loops_forever"][0] is False
    assert (
        by_name["loops_forever"][2]
        == by_name["loops_forever"][3]
        == ("timed out after 0.5 s (the check was stopped)")
    )
    assert by_name["says_yes"][0] is False
    assert by_name["says_yes"][2] == "returned str 'yes'; a check returns bool or CheckResult"


def test_a_check_that_kills_its_process_fails_and_the_next_check_gets_a_fresh_worker(tmp_path: Path) -> None:
    spec = load_scenario("support-refund").scenario.instantiate(1)
    context = CheckContext(spec, (("user", "hello"),), "We can refund you.")

    def exits(context: CheckContext) -> bool:
        os._exit(3)

    def long_reply(context: CheckContext) -> CheckResult:
        return CheckResult(len(context.reply) > 5, f"{len(context.reply)} chars")

    runner = ForkedCheckRunner()
    suite = CheckSuite((exits, long_reply), timeout_s=5, runner=runner)
    try:
        results = asyncio.run(suite.run(context))
    finally:
        runner.close()
    assert [(r.name, r.passed, r.detail) for r in results] == [
        ("exits", False, "its process died (exit code 3)"),
        ("long_reply", True, "18 chars"),
    ]


def test_inline_runner_judges_results_the_same_way() -> None:
    spec = load_scenario("math-tutor").scenario.instantiate(2)
    context = CheckContext(spec, (), "x = 4")

    def raises(context: CheckContext) -> bool:
        raise ValueError("bad reply")

    def returns_none(context: CheckContext) -> bool:
        return None  # type: ignore[return-value]

    def lambda_like(context: CheckContext) -> bool:
        return "x" in context.reply

    suite = CheckSuite((raises, returns_none, lambda_like), runner=InlineCheckRunner())
    results = asyncio.run(suite.run(context))
    assert [(r.passed, r.detail) for r in results] == [
        (False, "raised ValueError: bad reply"),
        (False, "returned NoneType None; a check returns bool or CheckResult"),
        (True, ""),
    ]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAPI]:
    with FakeAPI.start(FakeAPIConfig(responder="dramaturg.backends._sim:respond_text")) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> FakeAPI:
    server.reset()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-KEEPOUT")
    return server


@pytest.mark.parametrize(
    ("checks", "names", "expected"),
    [
        (
            "def two_args(context, extra) -> bool:\n    return True\n",
            "two_args",
            "check two_args: takes (context, extra) -> bool; expected def NAME(context: CheckContext) "
            "-> bool | CheckResult",
        ),
        (
            "def wrong_return(context: CheckContext) -> str:\n    return 'yes'\n",
            "wrong_return",
            "check wrong_return: returns str; expected",
        ),
        (
            "def wrong_parameter(reply: str) -> bool:\n    return True\n",
            "wrong_parameter",
            "check wrong_parameter: its parameter 'reply' is annotated str; expected",
        ),
    ],
)
def test_a_check_with_a_wrong_signature_stops_before_anything_is_written_or_paid(
    tmp_path: Path, cli: Cli, fake: FakeAPI, checks: str, names: str, expected: str
) -> None:
    path = scenario_file(tmp_path, checks, names)
    db = tmp_path / "never.duckdb"
    result = cli("run", path, "--model", "openai:gpt-test", "--base-url", fake.openai_base_url, "--db", db)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert str(path) in lines[0] and "field 'Scenario.checks.0'" in lines[0]
    assert expected in lines[0]
    assert not db.exists()
    assert fake.stats()["requests"] == 0


def test_check_signatures_are_judged_when_the_scenario_is_built() -> None:
    base = load_scenario("support-refund").scenario.model_dump(exclude={"checks"})

    def keyword_only(*, context: CheckContext) -> bool:
        return True

    def untyped(context):  # type: ignore[no-untyped-def]
        return True

    def optional_extra(context: CheckContext, strict: bool = False) -> bool | CheckResult:
        return True

    Scenario(**base, checks=[untyped, optional_extra, lambda c: True])
    with pytest.raises(ValueError, match="keyword_only: takes"):
        Scenario(**base, checks=[keyword_only])


LOOPS_ONCE = """
import os, pathlib, time

MARKER = pathlib.Path({marker!r})

def hangs_the_first_time(context: CheckContext) -> bool:
    if not MARKER.exists():
        MARKER.write_text(str(os.getpid()))
        while True:
            time.sleep(0.01)
    return True
"""


def test_ctrl_c_during_a_hung_check_stops_the_run_within_2_seconds_and_it_resumes(
    tmp_path: Path, cli: Cli
) -> None:
    marker = tmp_path / "hung.pid"
    path = scenario_file(tmp_path, LOOPS_ONCE.format(marker=str(marker)), "hangs_the_first_time", timeout=600)
    db = tmp_path / "c.duckdb"
    args = ("run", str(path), "-n", "2", "--best-of-n", "0", "--run-id", "c", "--db", str(db))
    process = dramaturg_subprocess(*args)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), process.communicate(timeout=5)
    time.sleep(0.2)
    hung_worker = int(marker.read_text())

    process.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - interrupted < 2.0
    assert process.returncode == 130, stderr
    assert "Resume with: dramaturg resume c" in stderr
    # The worker stuck in the check is gone too, not left spinning.
    deadline = time.monotonic() + 2
    while _alive(hung_worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(hung_worker)

    resumed = cli("resume", "c", "--db", db)
    assert resumed.exit_code == 0, resumed.output
    assert query(db, "SELECT status, count(*) FROM episodes GROUP BY 1") == [("done", 2)]
    assert query(db, "SELECT bool_and(passed) FROM checks WHERE name = 'hangs_the_first_time'") == [(True,)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(")")[-1].split()[0] == "Z")


def test_a_closure_check_from_a_notebook_runs_isolated() -> None:
    """Checks are inherited by forked workers, never pickled: closures and lambdas work."""
    banned = {"guarantee"}
    base = load_scenario("support-refund").scenario.model_dump(exclude={"checks"})
    scenario = Scenario(**base, checks=[lambda context: not banned & set(context.reply.lower().split())])
    runner = ForkedCheckRunner()
    try:
        context = CheckContext(scenario.instantiate(0), (), "I guarantee a refund")
        results = asyncio.run(CheckSuite(tuple(scenario.checks), runner=runner).run(context))
    finally:
        runner.close()
    assert [(r.name, r.passed) for r in results] == [("<lambda>", False)]


def test_a_scenario_sets_its_check_time_limit(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, BROKEN_CHECKS, "mentions_emergency", timeout=2.5)
    loaded = load_scenario(str(path))
    assert loaded.scenario.check_timeout_s == 2.5
    assert loaded.scenario.definition()["check_timeout_s"] == 2.5
    (tmp_path / "bad").mkdir()
    bad = scenario_file(tmp_path / "bad", BROKEN_CHECKS, "mentions_emergency", timeout=-1)
    with pytest.raises(ScenarioError, match="check_timeout_s"):
        load_scenario(str(bad))
    summary = asyncio.run(
        run(RunConfig(scenarios=[str(path)], episodes=1, best_of_n=0, run_id="k"), tmp_path / "k.duckdb")
    )
    assert summary.done == 1


FRAGILE_DERIVE = """
from dramaturg import Persona, Scenario, Stage

def urgency(values, rng):
    if values["symptom"] == "a rash":
        raise ZeroDivisionError("no rule for rashes")
    return {"urgency": "high" if values["symptom"] == "chest pain" else "low"}

scenario = Scenario(
    name="fragile",
    description="A caller describes {symptom}.",
    assistant_prompt="You are a triage nurse.",
    personas=[Persona(name="Lee", goal="find out whether {symptom} is {urgency} urgency")],
    variables={"symptom": ["chest pain", "a headache", "a rash"]},
    derive=urgency,
    stages=[Stage(name="describe", instruction="Describe {symptom}.", terminal=True)],
    max_turns=1,
)
"""


def test_a_derive_function_that_fails_for_some_seeds_fails_those_episodes_only(tmp_path: Path) -> None:
    path = tmp_path / "fragile.py"
    path.write_text(FRAGILE_DERIVE)
    db = tmp_path / "f.duckdb"
    summary = asyncio.run(run(RunConfig(scenarios=[str(path)], episodes=9, run_id="f"), db))
    assert summary.failed > 0 and summary.done > 0
    errors = query(db, "SELECT DISTINCT error FROM episodes WHERE status = 'failed'")
    assert errors == [("ValueError: field 'derive': ZeroDivisionError: no rule for rashes",)]
    assert query(db, "SELECT count(*) FROM episodes") == [(9,)]
