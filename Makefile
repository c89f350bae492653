# The one test command: lint, format check, type-check the *installed* package, tests.
PYTHON ?= python

.PHONY: test lint typecheck pytest

test: lint typecheck pytest

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

# Static checkers cannot follow setuptools' package-dir mapping in an editable install,
# so we check a real (non-editable) install of the package in a scratch folder.
typecheck:
	rm -rf .typecheck
	$(PYTHON) -m pip install --quiet --no-deps --target .typecheck .
	MYPYPATH=.typecheck $(PYTHON) -m mypy -p dramaturg

# Exit code 5 (no tests collected) is a failure, like any other non-zero code.
pytest:
	$(PYTHON) -m pytest
