# bobench — see README.md. `make setup && make run` runs the offline demo battle; `make setup && make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bobench-installed
OUT ?= bobench-out/offline-demo
SPEC ?= examples/offline-battle.yaml
PYTEST_ARGS ?=

.PHONY: help setup system-deps run test test-fast bench protos up down lint format freeze clean

help:
	@echo "make setup   create .venv with pinned dependencies (+ prometheus/chromium when root)"
	@echo "make run     run the offline demo battle ($(SPEC)) into $(OUT)"
	@echo "make test    run the whole test suite (unit, service, integration)"
	@echo "make bench   run the benchmarks (ratios against baselines measured in the same run)"
	@echo "make protos  regenerate gRPC/protobuf code from protos/"
	@echo "make up      start the local stack (Triton, evaluator, scheduler, SeaweedFS S3, Prometheus)"
	@echo "make down    stop exactly the processes 'make up' started"

setup: $(STAMP) system-deps

# Re-installs only when the dependency files change; a second `make setup` takes seconds.
$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23.2"
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	@touch $(STAMP)

system-deps:
	@bash scripts/install-system-deps.sh

run: $(STAMP)
	$(BIN)/bob battle run $(SPEC) --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow and not integration" $(PYTEST_ARGS)

bench: $(STAMP)
	@set -e; for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b; done

protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=src --pyi_out=src --grpc_python_out=src protos/bobench/v1/*.proto

up: $(STAMP)
	$(BIN)/python -m bobench.stack up $(if $(BACKBONES),--backbones $(BACKBONES))

down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m bobench.stack down; fi

lint: $(STAMP)
	$(BIN)/ruff check src tests bench services
	$(BIN)/ruff format --check src tests bench services

format: $(STAMP)
	$(BIN)/ruff format src tests bench services
	$(BIN)/ruff check --fix src tests bench services

freeze: $(STAMP)
	{ echo '# Exact versions that resolve together (see README "Dependencies"). Regenerate with `make freeze`.'; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^bobench'; } > constraints.txt

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache
