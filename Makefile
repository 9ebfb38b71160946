# terra-xfer: two commands do everything on a fresh machine.
#   make demo   run the pipeline on the embedded broker
#   make test   lint, type-check and run every test (starts and stops its own servers)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_CONFIG := examples/demo.toml
# Two test workers, each with its own broker: most tests wait on Kafka, so two overlap well even
# on two cores (the suite takes about 60% of the time it takes in one). PYTEST_WORKERS= runs one.
PYTEST_WORKERS ?= -n 2 --dist worksteal

.PHONY: demo test lint unit deps system-deps tools clean bench bench-quick

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python >= 3.11 is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

deps: system-deps $(STAMP) tools

# kustomize, for the tests that build the Kubernetes overlays (kubectl's own is used when present).
KUSTOMIZE_BIN := $(CURDIR)/.cache/bin/kustomize
tools:
	@if ! command -v kustomize >/dev/null && ! command -v kubectl >/dev/null \
	   && [ ! -x $(KUSTOMIZE_BIN) ] && command -v go >/dev/null; then \
	  GOBIN=$(CURDIR)/.cache/bin GOFLAGS=-mod=mod go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1; \
	fi

# Debian packages the tests use (installed only when missing, and only as root). The packaged
# vsftpd and PostgreSQL daemons are stopped again: the tests run their own instances on loopback
# ports (PostgreSQL from /usr/lib/postgresql/<version>/bin, in a temporary directory). A C compiler
# and librdkafka's headers build the benchmark's compiled producer floor (bench/compiled_floor.c).
system-deps:
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v vsftpd >/dev/null || [ -x /usr/sbin/vsftpd ] || missing="$$missing vsftpd"; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v cc >/dev/null || missing="$$missing gcc"; \
	[ -f /usr/include/librdkafka/rdkafka.h ] || missing="$$missing librdkafka-dev"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null \
	    && (service vsftpd stop >/dev/null 2>&1 || true) \
	    && (service postgresql stop >/dev/null 2>&1 || true); \
	  else echo "missing Debian packages:$$missing (install them as root)"; fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy terra_xfer producers consumers schemas

unit: $(STAMP)
	$(BIN)/pytest -m "not broker"

# Every broker the run starts carries its own tag (tests/broker_tag.py); what is left of them at
# the end is stopped, and nothing else: another checkout's test run on this machine goes on.
test: deps lint
	@set -o pipefail; status=0; run=terra-xfer-test-$$$$; \
	TERRA_XFER_TEST_TAG=$$run $(if $(wildcard $(KUSTOMIZE_BIN)),KUSTOMIZE=$(KUSTOMIZE_BIN)) $(BIN)/pytest $(PYTEST_WORKERS) || status=$$?; \
	pkill -f "terra[.]xfer[.]tag=$$run" 2>/dev/null || true; \
	exit $$status

demo: deps
	$(BIN)/python -m terra_xfer.demo --config $(DEMO_CONFIG) $(if $(KEEP),--keep-broker)

# Benchmarks: every speed against its limit, measured in the same run; writes bench/results.json
# and the table in BENCHMARKS.md. bench-quick: small counts (a minute or two).
bench: deps
	@command -v kcat >/dev/null || { if [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null; \
	  else echo "kcat is missing: apt-get install kcat (as root)"; fi; }
	PYTHONPATH=. $(BIN)/python -m bench.run $(BENCH_ARGS)

bench-quick:
	@$(MAKE) --no-print-directory bench BENCH_ARGS=--quick

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache .mypy_cache .ruff_cache
