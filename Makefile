# The README's two commands: `make demo` (the local stack) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# xds-protos (Envoy's API types) bundles an old copy of the opentelemetry/proto package; when pip
# happens to install it after opentelemetry-proto, the OTLP exporters stop importing. Reinstall
# the real opentelemetry-proto last, at the version already resolved.
FIX_OTEL_PROTO = $(BIN)/pip install --quiet --force-reinstall --no-deps \
	"opentelemetry-proto==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"

.PHONY: demo test lint typecheck unit integration interop venv npm clean bench fuzz

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(FIX_OTEL_PROTO)
	touch $(STAMP)

venv: $(STAMP)

# Node.js and npm run the interop tests' OIDC provider: installed from Debian when missing.
tests/interop/node_modules/.installed: tests/interop/package.json tests/interop/package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	cd tests/interop && npm ci --no-audit --no-fund --loglevel=error
	touch $@

npm: tests/interop/node_modules/.installed

demo: $(STAMP)
	$(BIN)/ztauthz dev stack

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP) npm lint
	$(BIN)/pytest -q -p no:cacheprovider

# The fuzz suite's long profile (tests/fuzz/, docs/security-hardening.md): random, thousands of
# examples per property, no per-test timeout; `make test` runs the short derandomized profile.
fuzz: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider tests/fuzz --hypothesis-profile=long --timeout=0

# Load and micro benchmarks against baselines (bench/README.md): installs wrk (Debian) and the
# bench extra, starts everything on loopback, prints the table and writes bench/results/.
bench: $(STAMP)
	@command -v wrk >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk; }
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(FIX_OTEL_PROTO)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) tests/interop/node_modules .pytest_cache .mypy_cache .ruff_cache
