"""The scenario DSL: validation that names the field, seeded instantiation, loading."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import pytest
from dramaturg.scenarios import CheckContext, builtin_scenarios

from dramaturg import Persona, Scenario, ScenarioError, Stage, Transition, load_scenario


def _scenario(**changes: object) -> Scenario:
    fields: dict[str, object] = {
        "name": "tiny",
        "description": "d",
        "assistant_prompt": "Be helpful about {topic}.",
        "personas": [Persona(name="A", goal="learn about {topic}"), Persona(name="B", goal="ask")],
        "variables": {"topic": ["tides", "volcanoes", "bees"]},
        "stages": [
            Stage(name="ask", instruction="Ask about {topic}."),
            Stage(name="close", instruction="Say thanks.", terminal=True),
        ],
    }
    fields.update(changes)
    return Scenario(**fields)  # type: ignore[arg-type]


def test_same_seed_same_spec_and_seeds_vary() -> None:
    scenario = load_scenario("support-refund").scenario
    assert scenario.instantiate(5) == scenario.instantiate(5)
    specs = {scenario.instantiate(seed).to_json() for seed in range(30)}
    assert len(specs) == 30


def test_math_tutor_knows_the_correct_answer() -> None:
    scenario = load_scenario("math-tutor").scenario
    for seed in range(50):
        spec = scenario.instantiate(seed)
        a_text, _, rest = str(spec.variable("problem")).partition("x + ")
        b_text, _, c_text = rest.partition(" = ")
        a, b, c = int(a_text), int(b_text), int(c_text)
        assert a * int(spec.variable("answer")) + b == c
        assert f"The correct answer is {spec.variable('answer')}." in spec.assistant_prompt


def test_math_tutor_check_tells_a_solution_step_from_the_answer() -> None:
    # Seen in a real 0.5B model's reply: "5x = 3" was counted as revealing x = 3.
    scenario = load_scenario("math-tutor").scenario
    spec = next(spec for spec in map(scenario.instantiate, range(50)) if spec.variable("answer") == 3)
    check = next(check for check in scenario.checks if check.__name__ == "answer_not_revealed_early")
    history = (("user", "How do I start?"),)
    assert check(CheckContext(spec, history, "Subtract from both sides: 5x = 3 ... then divide.")).passed
    assert not check(CheckContext(spec, history, "So x = 3.")).passed
    assert not check(CheckContext(spec, history, "The answer is 3.")).passed
    assert check(CheckContext(spec, (*history, ("user", "x = 3?")), "Yes, x = 3.")).passed


def test_stage_paths_follow_the_graph_and_end_terminal() -> None:
    for scenario in builtin_scenarios():
        graph = scenario.graph()
        for seed in range(40):
            path = scenario.instantiate(seed).stage_path
            assert len(path) <= scenario.max_turns
            for before, after in itertools.pairwise(path):
                assert graph.has_edge(before.name, after.name)
            assert path[-1].terminal


def test_linear_stages_need_no_transitions() -> None:
    spec = _scenario().instantiate(1)
    assert [stage.name for stage in spec.stage_path] == ["ask", "close"]
    assert spec.stage_path[0].instruction.startswith("Ask about ")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"transitions": [Transition(source="ask", target="nowhere")]}, "transitions.0.target"),
        ({"stages": [Stage(name="ask", instruction="Ask.")]}, "at least one stage needs terminal=True"),
        ({"assistant_prompt": "About {colour}."}, "field 'assistant_prompt': unknown placeholder {colour}"),
        ({"variables": {"topic": []}}, "field 'variables.topic'"),
        ({"start": "middle"}, "field 'start'"),
    ],
)
def test_invalid_scenarios_name_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as info:  # noqa: PT011 -- the message is checked below
        _scenario(**changes)
    assert message in str(info.value)


def test_malformed_file_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text(
        textwrap.dedent(
            """
            from dramaturg import Persona, Scenario, Stage

            scenario = Scenario(
                name="broken",
                description="d",
                assistant_prompt="p",
                personas=[Persona(name="A", goal="g", mood=3)],
                stages=[Stage(name="only", instruction="Say hi.", terminal=True)],
            )
            """
        )
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(path))
    text = str(info.value)
    assert str(path) in text
    assert "Persona.mood" in text
    assert "valid string" in text


def test_unknown_field_is_named(tmp_path: Path) -> None:
    path = tmp_path / "typo.py"
    path.write_text(
        "from dramaturg import Persona, Scenario, Stage\n"
        "scenario = Scenario(name='t', description='d', assistant_prompt='p', max_turn=3,\n"
        "    personas=[Persona(name='A', goal='g')],\n"
        "    stages=[Stage(name='s', instruction='i', terminal=True)])\n"
    )
    with pytest.raises(ScenarioError, match=r"typo\.py:2: field 'Scenario\.max_turn': Extra inputs"):
        load_scenario(str(path))


def test_file_with_several_scenarios_needs_a_name(tmp_path: Path) -> None:
    path = tmp_path / "two.py"
    path.write_text(
        "from dramaturg import Persona, Scenario, Stage\n"
        "def make(name):\n"
        "    return Scenario(name=name, description='d', assistant_prompt='p',\n"
        "        personas=[Persona(name='A', goal='g')],\n"
        "        stages=[Stage(name='s', instruction='i', terminal=True)])\n"
        "first = make('first')\n"
        "second = make('second')\n"
    )
    with pytest.raises(ScenarioError, match=r"found 2 \(first, second\); pick one with FILE\.py:NAME"):
        load_scenario(str(path))
    assert load_scenario(f"{path}:second").scenario.name == "second"
    assert load_scenario(f"{path}:first").scenario.name == "first"
    with pytest.raises(ScenarioError, match="no scenario named 'third'"):
        load_scenario(f"{path}:third")


def test_malformed_scenario_file_exits_2_naming_file_and_field(cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_text(
        "from dramaturg import Persona, Scenario, Stage\n"
        "scenario = Scenario(name='bad', description='d', assistant_prompt='p',\n"
        "    personas=[], stages=[Stage(name='s', instruction='i', terminal=True)])\n"
    )
    result = cli("run", path, "--db", tmp_path / "x.duckdb")
    assert result.exit_code == 2
    assert "bad.py" in result.output and "Scenario.personas" in result.output
    assert not (tmp_path / "x.duckdb").exists()
