# One command per job; each installs what it needs into .venv on first use.
# Two stamps: `make run` needs only the daemon's dependencies; the test, lint and benchmark
# jobs add the development extras on top. Either order works, and a changed pyproject.toml
# reinstalls on the next run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench
RUN_ARGS  ?=

.PHONY: install run test coverage bench schemas lint validate clean

# The pip that comes with Python 3.11 installs this project as it is (an upgrade first cost 12 s);
# --no-compile leaves bytecode to the first import, which compiles only the modules used.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed, found " + sys.version'
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing the daemon and its dependencies into $(VENV) (first run, or pyproject.toml changed; a minute or two on a fresh machine)"
	$(BIN)/python -m pip install --no-compile -e .
	@touch $@

$(DEV_STAMP): $(RUN_STAMP)
	@echo "installing the test, lint and benchmark tools into $(VENV) (first use, or pyproject.toml changed)"
	$(BIN)/python -m pip install --no-compile -e '.[dev]'
	@touch $@

$(BENCH_STAMP): $(DEV_STAMP)
	@echo "installing the peers the benchmarks compare with (Celery, procrastinate) into $(VENV)"
	$(BIN)/python -m pip install --no-compile -e '.[dev,bench]'
	@touch $@

install: $(RUN_STAMP) ## install the daemon and the `reconciler` command into .venv (bin/reconciler runs it)

run: $(RUN_STAMP) ## start the daemon on integrations.d/ with the embedded SQLite store
	@echo "starting the daemon; from another terminal in this folder: bin/reconciler status (README: First run)"
	$(BIN)/reconciler run --config-dir integrations.d $(RUN_ARGS)

test: $(DEV_STAMP) ## the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

coverage: $(DEV_STAMP) ## the whole suite under coverage, daemons started by the tests included; prints the total
	rm -f .coverage .coverage.*
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/python -m pytest --cov --cov-report=term $(PYTEST_ARGS)

# `make bench e2e intake`: the words after `bench` are the sections to run (all when none)
BENCH_SECTIONS := $(filter-out bench,$(MAKECMDGOALS))

bench: $(BENCH_STAMP) ## benchmarks (`make bench SECTION ...`); figures go to docs/benchmarks.md
	$(BIN)/python bench/run.py $(BENCH_SECTIONS) $(BENCH_ARGS)

ifneq ($(filter bench,$(MAKECMDGOALS)),)
# the section names are arguments of bench, not targets of their own
$(BENCH_SECTIONS):
	@:
endif

schemas: $(RUN_STAMP) ## regenerate schemas/ from the models
	$(BIN)/reconciler schemas --output schemas

validate: $(RUN_STAMP) ## validate the bundled integrations.d/
	$(BIN)/reconciler validate integrations.d

lint: $(DEV_STAMP) ## ruff, mypy, and the package layering (imports only go down: docs/architecture.md)
	$(BIN)/ruff check reconciler tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider --no-header tests/test_layers.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
