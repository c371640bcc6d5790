# socketlab — common tasks. `make help` lists them.
#
# The controller and the tests run from a virtualenv (.venv) created on first
# use; the lab itself runs in Docker (Compose v2 or v1.29, detected).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROJECT ?= socketlab
PYTEST_ARGS ?=
UNIT_PYTEST_ARGS ?=
UNIT_WORKERS ?= 4

# pytest keeps its assertion-rewritten test modules in __pycache__; an environment that
# disables bytecode makes every run rewrite some 300 modules again (~3 s per worker).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help venv doctor images lab-up lab-down lab-status test test-unit test-integration bench scenarios check fmt settings-doc clean

help:
	@echo "make doctor            check this machine's prerequisites (exit 1 if the lab cannot run)"
	@echo "make lab-up            check prerequisites, build images if needed, start, wait until healthy"
	@echo "make lab-down          remove the lab's containers, networks and volumes"
	@echo "make lab-status        services, health, IPs"
	@echo "make test              unit + integration tests (integration needs Docker)"
	@echo "make test-unit         unit tests only (no Docker, seconds)"
	@echo "make scenarios         run every scenario against the running lab (results/)"
	@echo "make bench             benchmarks: ratios to iperf3, the ceiling and a peer (reported, not asserted)"
	@echo "make check             ruff (lint + format check) and mypy --strict"
	@echo "make settings-doc      rewrite the README's table of every SOCKETLAB_* setting"
	@echo "make images            build (or reuse) the lab images"

$(BIN)/lab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(BIN)/lab

doctor: venv
	$(BIN)/lab doctor

images: venv
	$(BIN)/lab -p $(PROJECT) build

lab-up: venv
	$(BIN)/lab -p $(PROJECT) up

lab-down: venv
	$(BIN)/lab -p $(PROJECT) down

lab-status: venv
	$(BIN)/lab -p $(PROJECT) status

# Benchmarks measure and report (ratios to iperf3, the ceiling, a peer); they are not
# pass/fail tests and run only with `make bench`.
# Unit tests run in UNIT_WORKERS processes (pytest-xdist). Integration tests
# run in two: one has every test of the shared lab, in order; the other the
# modules that bring up labs of their own (tests/conftest.py, STANDALONE).
test: venv
	$(BIN)/pytest tests/unit -m "not benchmark" -n $(UNIT_WORKERS) $(UNIT_PYTEST_ARGS)
	$(BIN)/pytest tests/integration -m "not benchmark" -n 2 --dist loadgroup $(PYTEST_ARGS)

# The tmpfs bench keeps its 2 GiB file in RAM charged to the client, and the server's
# page cache of that file is charged to the server: larger memory limits for both.
bench: venv
	SOCKETLAB_CLIENT_MEM_LIMIT=$${SOCKETLAB_CLIENT_MEM_LIMIT:-3g} \
	SOCKETLAB_SERVER_MEM_LIMIT=$${SOCKETLAB_SERVER_MEM_LIMIT:-3g} \
	$(BIN)/pytest -m benchmark -s $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest tests/unit -m "not benchmark" -n $(UNIT_WORKERS) $(PYTEST_ARGS)

test-integration: venv
	$(BIN)/pytest tests/integration -m "integration and not benchmark" -n 2 --dist loadgroup $(PYTEST_ARGS)

scenarios: venv
	$(BIN)/lab -p $(PROJECT) run --all

check: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

settings-doc: venv
	$(BIN)/python -m lab.settings_doc

fmt: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf build .mypy_cache .ruff_cache .pytest_cache results
