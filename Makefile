# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SHARED ?= $(abspath ../shared)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export JURYSTREAM_DATA_ROOT ?= $(SHARED)/data

.PHONY: install demo test test-fast lint bench clean

$(BIN)/jurystream: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned, so nothing pulls a CUDA build (the CPU wheel lies on disk here)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[train,dev]'
	touch $(BIN)/jurystream

install: $(BIN)/jurystream

demo: install
	$(BIN)/jurystream demo $(DEMO_ARGS)

lint: install
	$(BIN)/ruff check jurystream tests
	$(BIN)/ruff format --check jurystream tests
	$(BIN)/mypy jurystream

test: lint
	$(BIN)/pytest -ra $(PYTEST_ARGS)

test-fast: install
	$(BIN)/pytest -ra -m 'not slow' $(PYTEST_ARGS)

bench: install
	$(BIN)/jurystream bench perf

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
