# capgate — `make serve` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: serve test test-fast bench demo protos check-protos lint typecheck clean lock screenshots

# The venv is rebuilt only when the pinned requirements or the project metadata change.
# requirements.lock pins every package (server and development tools included) with
# its hashes; `make lock` regenerates it from pyproject.toml.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

lock: $(STAMP)
	$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --no-emit-index-url \
	    --no-emit-find-links --strip-extras --extra server --extra plot --extra dev \
	    --output-file requirements.lock pyproject.toml

serve: $(STAMP)
	$(VENV)/bin/capgate serve

test: $(STAMP) check-protos lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

# The core's unit tests in seconds, while you work (the property tests and every
# server test run in `make test`).
test-fast: $(STAMP)
	$(PY) -m pytest tests/core --ignore-glob='*test_prop_*' $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m pytest benchmarks -p no:randomly --benchmark-only --benchmark-columns=min,median,mean,ops,rounds $(PYTEST_ARGS)

# The governance scenarios (docs/governance.md), printed: a replayed week of four agents,
# its access review and the injected deviations; `benchmarks/scenario_figures.py` with
# no arguments also runs the fleet and the throughput runs, and writes benchmarks/README.md.
demo: $(STAMP)
	$(PY) benchmarks/scenario_figures.py --fleet-runs 0 --bench-runs 0 --no-write

# A PNG of every console page in .screenshots/ (git-ignored), taken in Debian's chromium.
screenshots: $(STAMP)
	$(PY) tools/console_screenshots.py --out .screenshots

# Regenerate the gRPC stubs from protos/capgate_proto/v1/*.proto (package capgate.v1).
protos: $(STAMP)
	$(PY) tools/gen_protos.py

check-protos: $(STAMP)
	$(PY) tools/gen_protos.py --check

lint: $(STAMP)
	$(VENV)/bin/ruff check core client server cli tests benchmarks tools examples
	$(VENV)/bin/ruff format --check --quiet core client server cli tests benchmarks tools examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	@test -x $(PY) && $(PY) tools/drop_walkthrough_schemas.py || true
	rm -rf $(VENV) .capgate .walkthrough
