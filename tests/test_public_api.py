"""The public surface is explicit, and importing dramaturg stays light."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

ROOTS = [
    "dramaturg",
    "dramaturg.agents",
    "dramaturg.scenarios",
    "dramaturg.memory",
    "dramaturg.evaluators",
    "dramaturg.backends",
    "dramaturg.testing",
]


@pytest.mark.parametrize("name", ROOTS)
def test_every_exported_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported and len(set(exported)) == len(exported)
    for attribute in exported:
        assert getattr(module, attribute) is not None, f"{name}.{attribute}"


def test_import_does_not_load_the_model_sdks() -> None:
    code = "import sys, dramaturg; print(any(m in sys.modules for m in ('anthropic', 'openai')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
