# make demo / make test bootstrap .venv on first use; make setup only (re)installs it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKDIR ?= runs/demo

.PHONY: setup demo test lint format test-slow test-browser chaos manifests bench status clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel
	# the local CPU wheel; installed first so nothing pulls a CUDA build
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[test]"
	# img2dataset pulls the py3.6 'dataclasses' backport, which shadows the stdlib module when
	# Prefect's server puts site-packages first on sys.path
	$(BIN)/pip uninstall -y -q dataclasses
	touch $(STAMP)

demo: setup
	$(BIN)/mvlp demo --workdir $(WORKDIR)

# two pytest processes (pytest-xdist), each module kept in one: the demo's e2e module runs beside
# the rest instead of before it (TEST_PROCESSES=1 runs the suite in this process)
TEST_PROCESSES ?= 2
test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider $(if $(filter 1,$(TEST_PROCESSES)),,-n $(TEST_PROCESSES) --dist loadfile)

# ruff: lint rules and formatting as configured in pyproject.toml (CI runs it before the tests)
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test-slow: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m slow

# SIGKILL at seeded points inside every stage, then re-run and compare (CHAOS_SEEDS=N: how many)
chaos: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m chaos tests/chaos

# the Prefect UI in headless Chromium (needs Debian's chromium + chromium-driver; .ci/run installs them)
test-browser: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m slow tests/e2e/test_prefect_ui_browser.py
	@echo "screenshots: runs/test-artifacts/prefect-flow-run*.png runs/test-artifacts/prefect-stage-run-artifacts.png"

# render the kustomize overlays (kubectl's built-in kustomize) for review
manifests:
	kubectl kustomize infra/k8s/overlays/$(or $(OVERLAY),dev)

bench: setup
	$(BIN)/python -m benchmarks.harness --runs $(or $(RUNS),3) $(if $(BENCH),--only $(BENCH))

status: setup
	$(BIN)/mvlp status --workdir $(WORKDIR)

clean:
	rm -rf runs
