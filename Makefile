# The handful of commands everyone uses. `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: help install test test-unit test-integration lowest demo bench proto proto-check lint deadcode ci

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: ## create .venv and install the project with its test extras
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -q -e '.[test]'

test: ## run the whole test suite (the Quick start command)
	$(PY) -m pytest -q

test-unit: ## the fast tier: in process, no socket, no subprocess (seconds)
	$(PY) -m pytest -q -m 'not integration'

test-integration: ## the integration tier: real servers, sockets, subprocesses
	$(PY) -m pytest -q -m integration

lowest: ## codec, adapter, credential and conformance tests with every dependency at its floor
	bash .ci/lowest-versions

demo: ## run the end-to-end demo
	$(VENV)/bin/trustgw demo

bench: ## run the benchmark (about three minutes)
	$(PY) bench/run.py

proto: ## regenerate the committed protobuf code from proto/
	$(PY) tools/gen_proto.py

proto-check: ## fail when the committed protobuf code is out of date
	$(PY) tools/gen_proto.py --check

lint: ## ruff and mypy --strict with the gRPC stubs, as CI runs them (installs the pinned lint extra)
	$(VENV)/bin/pip install -q -e '.[lint]' && VENV=$(VENV) bash .ci/lint

deadcode: ## what nothing calls, reads or tests (vulture, from the lint extra; tools/vulture_allow.py)
	$(VENV)/bin/vulture

ci: ## what CI runs
	bash .ci/run
