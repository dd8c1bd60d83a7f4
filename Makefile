# capgate — `make serve` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: serve test bench protos check-protos lint typecheck clean

# The venv is rebuilt only when the pinned requirements or the project metadata change.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

serve: $(STAMP)
	$(VENV)/bin/capgate serve

test: $(STAMP) check-protos lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m pytest benchmarks -p no:randomly --benchmark-only --benchmark-columns=min,median,mean,ops,rounds $(PYTEST_ARGS)

# Regenerate the gRPC stubs from protos/capgate_proto/v1/*.proto (package capgate.v1).
protos: $(STAMP)
	$(PY) tools/gen_protos.py

check-protos: $(STAMP)
	$(PY) tools/gen_protos.py --check

lint: $(STAMP)
	$(VENV)/bin/ruff check core client server cli tests benchmarks tools

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .capgate
