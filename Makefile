# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SHARED ?= $(abspath ../shared)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export JURYSTREAM_DATA_ROOT ?= $(SHARED)/data

.PHONY: install demo test test-fast lint bench clean prometheus lock checkov compose-schema

$(BIN)/jurystream: pyproject.toml deploy/requirements-serving.txt deploy/requirements-trainer.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned, so nothing pulls a CUDA build (the CPU wheel lies on disk here)
	$(BIN)/pip install -q torch==2.13.0
	# the versions the image locks pin (what the tests check the locks against), so a new
	# release on the registry cannot make a fresh venv differ from the images
	cat deploy/requirements-serving.txt deploy/requirements-trainer.txt \
	  | grep -E '^[A-Za-z0-9._-]+==' | sed 's/ .*//' | sort -u > $(VENV)/constraints.txt
	$(BIN)/pip install -q -c $(VENV)/constraints.txt -e '.[train,local,dev]'
	touch $(BIN)/jurystream

install: $(BIN)/jurystream

demo: install
	$(BIN)/jurystream demo $(DEMO_ARGS)

lint: install
	$(BIN)/ruff check jurystream tests
	$(BIN)/ruff format --check jurystream tests
	$(BIN)/mypy jurystream

# The tests run a real Prometheus and promtool: Debian's `prometheus` package, installed here
# when missing (as root), otherwise a stop at once with the one command to run.
prometheus:
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's prometheus package (the tests run a real Prometheus)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	  fi; \
	  if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
	    echo "error: the tests need prometheus and promtool on PATH; run: sudo apt-get install -y prometheus" >&2; \
	    exit 1; \
	  fi; \
	fi

# checkov (the IaC scanner) in a venv of its own: its pins would fight the project's. The
# docker-compose 1.29.2 wheel, without its dependencies, only for its Compose JSON schema.
TOOLS := .tools
$(TOOLS)/bin/checkov:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q checkov==3.3.30
	$(TOOLS)/bin/pip install -q --no-deps docker-compose==1.29.2

# The Dockerfile and the Kubernetes manifests; deploy/.checkov.yaml says why a check is skipped.
checkov: $(TOOLS)/bin/checkov
	$(TOOLS)/bin/checkov -d deploy --config-file deploy/.checkov.yaml

# No Docker here (`docker compose config` where there is): the file against the Compose schema.
compose-schema: $(TOOLS)/bin/checkov
	$(TOOLS)/bin/python tools/check_compose.py

test: prometheus lint checkov compose-schema
	$(BIN)/pytest -ra $(PYTEST_ARGS)

test-fast: install prometheus
	$(BIN)/pytest -ra -m 'not slow' $(PYTEST_ARGS)

# Hashed locks for the images (deploy/requirements-*.txt, read by deploy/Dockerfile): the
# versions this venv holds, what the tests ran against, with PyPI's sha256 of each file (uv,
# in the tools venv; this target needs PyPI, `make test` only compares names and versions).
$(TOOLS)/bin/uv: $(TOOLS)/bin/checkov
	$(TOOLS)/bin/pip install -q uv==0.13.8

lock: install $(TOOLS)/bin/uv
	$(BIN)/python tools/lock.py --uv $(TOOLS)/bin/uv

bench: install
	$(BIN)/jurystream bench perf

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
