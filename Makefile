# loglake: `make demo` runs the pipeline on the embedded spool transport;
# `make test` sets up everything (venv, Kafka jars, certificates, broker) and runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CERTS  := var/certs
DEMO   := var/demo
DEMO_CONFIG := deploy/demo/loglake.toml
PYTEST_ARGS ?=
# rustup installs cargo here; the shipper's native core (shipper/lines) is built with it.
export PATH := $(HOME)/.cargo/bin:$(PATH)
NATIVE := $(foreach c,shipper/lines lake/needles,$(c)/Cargo.toml $(c)/Cargo.lock $(wildcard $(c)/src/*.rs))
DIST   := dist
# `make dist` builds with the venv's Python when there is one: the editable install built the
# native core with that interpreter, and cargo rebuilds pyo3 and the core (about 25 s) whenever
# the interpreter changes. Elsewhere (the Dockerfile's build stage) $(PYTHON).
DIST_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))

.PHONY: all venv certs kafka-fetch kafka-up kafka-down demo test dist clean cargo-test typecheck

all: venv

# Runtime dependencies only (what `make demo` needs); the test extras (moto, …) come on top for `make test`.
$(BIN)/.runtime: pyproject.toml $(NATIVE)
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs) to build the native cores (shipper/lines, lake/needles)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $@

$(BIN)/.installed: $(BIN)/.runtime
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed

certs: venv
	@test -f $(CERTS)/ca.crt || $(BIN)/loglake-aggregator certs --out $(CERTS) >/dev/null
	@echo "certificates in $(CERTS)"

kafka-fetch:
	deploy/kafka/kafka.sh fetch

kafka-up: venv certs
	PYTHON=$(BIN)/python LOGLAKE_CERTS=$(CURDIR)/$(CERTS) deploy/kafka/kafka.sh up

kafka-down:
	deploy/kafka/kafka.sh down

demo: $(BIN)/.runtime
	rm -rf $(DEMO)
	$(BIN)/python benchmarks/loggen.py --out $(DEMO)/logs --lines 5000 --files 8
	$(BIN)/loglake-shipper --config $(DEMO_CONFIG) --once --log-level WARNING
	$(BIN)/loglake-aggregator --config $(DEMO_CONFIG) --once --log-level WARNING
	@echo; echo "== lines per container"
	@$(BIN)/loglake-query --config $(DEMO_CONFIG) sql \
	  "SELECT namespace, pod, container, count(*) AS lines FROM logs GROUP BY ALL ORDER BY lines DESC"
	@echo; echo "== one trace across services"
	@$(BIN)/loglake-query --config $(DEMO_CONFIG) sql \
	  "SELECT time, namespace, container, severity_text AS level, trace_id, body FROM logs WHERE trace_id = \
	   (SELECT trace_id FROM logs WHERE trace_id IS NOT NULL GROUP BY trace_id \
	    ORDER BY count(DISTINCT pod) DESC, trace_id LIMIT 1) ORDER BY time"
	@echo; echo "== recent errors"
	@$(BIN)/loglake-query --config $(DEMO_CONFIG) sql \
	  "SELECT time, namespace, pod, body FROM logs WHERE severity_number >= 17 ORDER BY time DESC LIMIT 10"
	@echo; echo "== integrity and completeness (loglake-aggregator verify)"
	@$(BIN)/loglake-aggregator --config $(DEMO_CONFIG) verify

# The native cores' own unit tests: their pure functions, without the Python build's extension-module feature.
cargo-test: venv
	for crate in shipper/lines lake/needles; do \
	  PYO3_PYTHON=$(CURDIR)/$(BIN)/python cargo test --release -q --manifest-path $$crate/Cargo.toml || exit 1; done

# The static type check of the packages (settings: pyproject.toml [tool.mypy]; the native core's types:
# shipper/_lines.pyi).
typecheck: venv
	$(BIN)/mypy

test: venv certs kafka-fetch cargo-test typecheck
	@PYTHON=$(BIN)/python LOGLAKE_CERTS=$(CURDIR)/$(CERTS) deploy/kafka/kafka.sh up
	@status=0; LOGLAKE_TEST_CERTS=$(CURDIR)/$(CERTS) $(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	  deploy/kafka/kafka.sh down; exit $$status

# A wheel with the native core compiled in release mode (pyproject: debug = false), installable
# with no Rust toolchain: $(DIST)/loglake-<version>-<python>-<abi>-<platform>.whl. build/ is
# removed first, so a module deleted from the tree cannot linger in the wheel.
dist:
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs) to build the native cores (shipper/lines, lake/needles)"; exit 1; }
	rm -rf build $(DIST)/loglake-*.whl
	$(DIST_PYTHON) -m pip wheel -q --no-deps --wheel-dir $(DIST) .
	@ls -l $(DIST)/loglake-*.whl

clean:
	-deploy/kafka/kafka.sh down
	rm -rf var $(VENV) build $(DIST)
