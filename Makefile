# One command per job; each installs what it needs into .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test coverage bench schemas lint validate clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed, found " + sys.version' 
	@command -v git >/dev/null || { echo "git is needed (run --source, plan): install it, e.g. apt-get install git" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP) ## start the daemon on integrations.d/ with the embedded SQLite store
	$(BIN)/reconciler run --config-dir integrations.d

test: $(STAMP) ## the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

coverage: $(STAMP) ## the whole suite under coverage, daemons started by the tests included; prints the total
	rm -f .coverage .coverage.*
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/python -m pytest --cov --cov-report=term $(PYTEST_ARGS)

bench: $(STAMP) ## benchmarks; figures go to docs/benchmarks.md
	$(BIN)/python bench/run.py $(BENCH_ARGS)

schemas: $(STAMP) ## regenerate schemas/ from the models
	$(BIN)/reconciler schemas --output schemas

validate: $(STAMP) ## validate the bundled integrations.d/
	$(BIN)/reconciler validate integrations.d

lint: $(STAMP) ## ruff, mypy, and the package layering (imports only go down: docs/architecture.md)
	$(BIN)/ruff check reconciler tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider --no-header tests/test_layers.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
