# The README's two commands: `make demo` (the local stack) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Two locks (docs/packaging.md): requirements.lock is what `serve` runs on (the container image
# installs exactly it); requirements-dev.lock is that plus the dev extra (tests, linters, Envoy),
# resolved under requirements.lock so both agree on every runtime version. `make lock` regenerates
# both after a change to pyproject.toml, keeping every pin it can; `make lock LOCK_ARGS=--upgrade`
# moves everything to the newest versions the ranges allow.
LOCK_FLAGS = --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-find-links --no-emit-index-url $(LOCK_ARGS)

.PHONY: help demo test lint typecheck unit integration interop deploy-check fuzz venv npm curl redis clean bench \
	container-check sbom lock protos

# Coverage floor for `make test` (branch coverage of app/): raised as the suite grows, never
# lowered. The HTML report lands in htmlcov/index.html (make coverage-report).
COVERAGE_FLOOR ?= 84
PYTEST := $(BIN)/pytest -q -p no:cacheprovider
# make test runs the suite on two workers (pytest-xdist), one test file per worker at a time
# (--dist loadfile: a file's module fixtures, such as its stack, start once): on two cores
# about half the time of one worker. TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2

help: ## list the targets, one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The venv holds exactly requirements-dev.lock (every file checked against its hash; --clear drops
# whatever an older lock left), then ztauthz itself, editable.
$(STAMP): pyproject.toml requirements.lock requirements-dev.lock
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check
	touch $(STAMP)

venv: $(STAMP) ## create .venv with the package and its dev extras

lock: $(STAMP) ## regenerate requirements.lock and requirements-dev.lock after editing pyproject.toml
	$(BIN)/pip-compile $(LOCK_FLAGS) --output-file=requirements.lock pyproject.toml
	$(BIN)/pip-compile $(LOCK_FLAGS) --extra=dev --constraint=requirements.lock \
	  --output-file=requirements-dev.lock pyproject.toml

# app/protos/envoy_ext_authz_pb2.py(i) from ztauthz's own app/protos/envoy_ext_authz.proto
# (docs/packaging.md); commit the result (tests/unit/core/test_protos.py compares).
protos: $(STAMP) ## regenerate app/protos/envoy_ext_authz_pb2.py(i) from app/protos/envoy_ext_authz.proto
	$(BIN)/python tools/generate_protos.py

# Node.js and npm run the interop tests' OIDC provider: installed from Debian when missing.
tests/interop/node_modules/.installed: tests/interop/package.json tests/interop/package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	cd tests/interop && npm ci --no-audit --no-fund --loglevel=error
	touch $@

npm: tests/interop/node_modules/.installed ## install the interop tests' OIDC provider (Node.js from Debian if missing)

# curl runs the commands the docs show (tests/integration/test_documented_commands.py): installed
# from Debian when missing.
curl: ## install curl from Debian if missing (the documented commands use it)
	@command -v curl >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null; }

# redis-server backs the shared store's integration tests (tests/integration/redis_support.py
# starts one per test on a loopback port).
redis: ## install redis-server from Debian if missing
	@command -v redis-server >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

demo: $(STAMP) ## run the local stack: Envoy + ztauthz + dev OIDC issuer + demo upstream, on loopback
	$(BIN)/ztauthz dev stack

lint: $(STAMP) typecheck ## ruff (lint and format) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy --strict over app/ and tests/
	$(BIN)/mypy

test: $(STAMP) npm curl redis lint ## the whole suite (lint, types, unit, integration, interop, deploy) with the coverage gate
	$(PYTEST) -n $(TEST_WORKERS) --dist loadfile \
	  --cov=app --cov-branch --cov-report=term:skip-covered --cov-report=html \
	  --cov-fail-under=$(COVERAGE_FLOOR)

unit: $(STAMP) ## unit tests: in-process, no Envoy
	$(PYTEST) tests/unit

integration: $(STAMP) curl npm redis ## tests through real Envoy, ztauthz, issuers, Redis and the CLI (and the documented Node.js verifier)
	$(PYTEST) tests/integration

interop: $(STAMP) npm ## interop with the independent OIDC provider (npm oidc-provider)
	$(PYTEST) tests/interop

deploy-check: $(STAMP) ## deployment files: Envoy bootstraps, Kubernetes (kubernetes-validate --strict), Istio, compose
	$(PYTEST) tests/deploy

# The fuzz suite's long profile (tests/fuzz/, docs/security-hardening.md): random, thousands of
# examples per property, no per-test timeout; `make test` runs the short derandomized profile.
fuzz: $(STAMP) ## the fuzz suite's long profile (random, 4,000 examples a property), ~11 min
	$(PYTEST) tests/fuzz --hypothesis-profile=long --timeout=0

# Load and micro benchmarks against baselines (bench/README.md): installs wrk (Debian) and the
# bench extra, starts everything on loopback, prints the table and writes bench/results/.
bench: $(STAMP) ## load and micro benchmarks against baselines (bench/README.md), ~7 min
	@command -v wrk >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk; }
	sed -e '/^ *--hash=/d' -e 's/ \\$$//' requirements-dev.lock > $(VENV)/constraints.txt
	$(BIN)/pip install --quiet -c $(VENV)/constraints.txt -e '.[dev,bench]'
	$(BIN)/python -m bench.run

# The CycloneDX SBOM (JSON, spec 1.6) of the image's Python runtime set: every pinned, hashed
# entry of requirements.lock, with ztauthz (pyproject.toml) as the root component. The lock is
# flat, so the SBOM lists components without a dependency graph (the warning says so).
SBOM ?= dist/ztauthz.cdx.json
sbom: $(STAMP) ## the CycloneDX SBOM of the runtime set (dist/ztauthz.cdx.json)
	@mkdir -p $(dir $(SBOM))
	$(BIN)/python -W "ignore:The Component this BOM is describing:UserWarning" -m cyclonedx_py \
	  requirements requirements.lock --pyproject pyproject.toml \
	  --sv 1.6 --of JSON --output-reproducible -o $(SBOM)
	@echo "wrote $(SBOM)"

# The image and the docker-compose walkthrough with a real Docker engine (docs/containers.md):
# installs Debian's docker.io and Compose v2 when missing and starts the engine if none runs
# (root), uses local stand-ins where no registry answers. Minutes, not part of `make test`.
container-check: ## the image and the compose walkthrough with a real Docker engine (root, ~90 s warm)
	$(PYTHON) -m tools.container_check


clean: ## remove the venv, node_modules, caches and coverage output
	rm -rf $(VENV) tests/interop/node_modules .pytest_cache .mypy_cache .ruff_cache htmlcov .coverage
