# The verbs a newcomer looks for. Everything runs from a local virtualenv (.venv)
# that `make install` creates, so a fresh machine needs only python3.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

# Python code that ruff checks (bench/ joins once it exists).
CODE   := server client tests $(wildcard bench)

.PHONY: install run simulator test lint format typecheck proto bench soak grpc-core overload hotpath clean

$(BIN)/ai-service: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/ai-service

run: install            ## the gateway on its embedded default (built-in simulator, demo key)
	$(PY) -m server $(ARGS)

simulator: install      ## the upstream simulator alone on 127.0.0.1:8080
	$(PY) -m server.simulator $(ARGS)

test: install           ## every test, lint and type check
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy

format: install
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --fix $(CODE)

proto: install          ## regenerate the stubs beside protos/ai_service.proto
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. protos/ai_service.proto

bench: install          ## the benchmark (writes bench/RESULTS.md); ARGS="--quick" or "--peers litellm"
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client; }
	$(PY) -m bench $(ARGS)

soak: install           ## 10 minutes of steady load: do the gateway's RSS or fds creep? ARGS="--duration 600 --rate 100"
	$(PY) -m bench.soak $(ARGS)

grpc-core: install      ## gRPC core settings (GRPC_EXPERIMENTS) for echo, forwarder and gateway, side by side
	$(PY) -m bench.grpc_core $(ARGS)

overload: install       ## above saturation: what callers get at 2x the gateway's peak, and does it recover?
	$(PY) -m bench.overload $(ARGS)

hotpath: install        ## each piece of a unary call in-process, with hot and cold caches (µs)
	$(PY) -m bench.hotpath $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
