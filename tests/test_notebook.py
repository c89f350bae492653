"""The quickstart notebook runs top to bottom on the offline sim backend."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"


def _text(cell: nbformat.NotebookNode) -> str:
    """Everything a code cell printed or displayed, as text."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts.append(output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


@pytest.mark.slow
def test_quickstart_notebook_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs for cell in code_cells), "the notebook is stored without outputs"
    # "python3" is the venv's ipykernel: jupyter_client swaps the spec's bare "python" for
    # sys.executable. The kernel inherits TMPDIR, so the notebook's temporary folder is
    # under tmp_path and cleaned up with it; it starts there too, so nothing lands in the repo.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    client = NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    errors = [output for cell in code_cells for output in cell.outputs if output.output_type == "error"]
    assert errors == []
    workdir = _text(code_cells[0])
    assert str(tmp_path) in workdir, f"the notebook must write into a temporary folder, not {workdir}"
    assert re.search(r"10 episodes done, 0 failed", "".join(map(_text, code_cells)))
    printed = "".join(map(_text, code_cells))
    pairs = re.search(r"^pairs: (\d+)$", printed, re.MULTILINE)
    assert pairs is not None, printed
    assert int(pairs.group(1)) > 0
    # A Scenario built in a cell, run with run_sync; each episode's record reaches the callback.
    records = re.findall(r"^\S+/museum-hours/\d+: done, \d+ turns, \d+ pairs$", _text(code_cells[-1]), re.M)
    assert len(records) == 3, _text(code_cells[-1])
