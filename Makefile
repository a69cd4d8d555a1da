# The verbs a newcomer looks for. Everything runs from a local virtualenv (.venv)
# that `make install` creates, so a fresh machine needs only python3.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

# Python code that ruff checks (bench/ joins once it exists).
CODE   := server client tests $(wildcard bench)

.PHONY: install lock run simulator test test-fast coverage mutate lint format typecheck proto bench soak grpc-core overload hotpath identity ledger http-door media dashboard-preview clean

# Every Python package comes from the lock in requirements/ (exact versions, with hashes),
# installed with --no-deps: the lock is complete, so a fresh machine gets exactly what the
# tests passed with. pyproject.toml keeps compatible ranges for installs elsewhere.
LOCK_ARGS := --quiet --require-hashes --no-deps --no-build-isolation

$(BIN)/ai-service: pyproject.toml requirements/build.txt requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements/build.txt
	$(BIN)/pip install $(LOCK_ARGS) -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $@

install: $(BIN)/ai-service

run: install            ## the gateway on its embedded default (built-in simulator, demo key)
	$(PY) -m ai_service $(ARGS)

simulator: install      ## the upstream simulator alone on 127.0.0.1:8080
	$(PY) -m ai_service.simulator $(ARGS)

test: lint              ## every test, after lint, type check and the import contracts
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: install      ## the unit tier alone: pure logic, no network, a few seconds
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

mutate: install         ## mutation testing of the core modules against the unit tier (slow; see CONTRIBUTING.md)
	$(PY) -m tests.mutate $(ARGS)

coverage: install       ## every test under coverage, child processes included; report by module
	rm -rf build/coverage && mkdir -p build/coverage
	$(BIN)/coverage run -m pytest $(PYTEST_ARGS)
	$(BIN)/coverage combine
	$(BIN)/coverage report

lint: install           ## ruff, mypy --strict, and the layers' import contracts
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format: install
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --fix $(CODE)

# The stubs are generated as the `ai_service_protos` package (the name they are installed
# under), into a scratch folder, then copied beside the .proto.
PROTOC := $(PY) -m grpc_tools.protoc -Iai_service_protos=protos \
	--python_out=build/proto --pyi_out=build/proto --grpc_python_out=build/proto

proto: install          ## regenerate the stubs beside protos/ai_service.proto (locked grpcio-tools)
	rm -rf build/proto && mkdir -p build/proto
	$(PROTOC) ai_service_protos/ai_service.proto
	cp build/proto/ai_service_protos/ai_service_pb2* protos/

# `make lock` resolves pyproject.toml's dependencies into the lock files, keeping the
# versions already locked (so adding a dependency moves nothing else), installs them and
# regenerates the stubs; `make lock UPGRADE=1` moves everything to the newest versions
# pyproject.toml allows (grpcio-tools included).
# The widest set (bench) is resolved first; the others are held to its versions, so the
# runtime image (runtime.txt), the test venv (dev.txt), the bench venv and a client-only
# install (client.txt) agree.
UV_COMPILE := $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 --no-header \
	--universal $(if $(UPGRADE),--upgrade)

lock: install           ## refresh requirements/*.txt, reinstall, regenerate the stubs
	$(UV_COMPILE) requirements/build.in -o requirements/build.txt
	$(UV_COMPILE) pyproject.toml --extra gateway --extra dev --extra bench -c requirements/build.txt \
		-o requirements/bench.txt
	$(UV_COMPILE) pyproject.toml --extra gateway --extra dev -c requirements/bench.txt \
		-o requirements/dev.txt
	$(UV_COMPILE) pyproject.toml --extra gateway -c requirements/bench.txt -o requirements/runtime.txt
	$(UV_COMPILE) pyproject.toml -c requirements/bench.txt -o requirements/client.txt
	rm -f $(BIN)/ai-service
	$(MAKE) install proto

bench: install          ## the benchmark (writes bench/RESULTS.md); ARGS="--quick" or "--peers litellm"
	$(BIN)/pip install $(LOCK_ARGS) -r requirements/bench.txt
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

identity: install       ## what identifying a caller costs per source, and how fast a revocation reaches 3 replicas
	$(PY) -m bench.identity $(ARGS)

ledger: install         ## what metering a call's spend and budgets costs on the memory backend (µs)
	$(PY) -m bench.ledger $(ARGS)

http-door: install      ## the HTTP door beside the gRPC door and LiteLLM's proxy: added latency, RPS, CPU per request
	$(PY) -m bench.http_door $(ARGS)

media: install          ## a 1 MiB image beside a text request: added latency, gateway memory
	$(PY) -m bench.media $(ARGS)

dashboard-preview: install  ## the Grafana dashboard's main panels, drawn from a real run, as docs/images/dashboard-preview.png
	$(BIN)/pip install $(LOCK_ARGS) -r requirements/bench.txt
	command -v prometheus >/dev/null || { apt-get update -qq && apt-get install -y -qq prometheus; }
	$(PY) -m bench.dashboard_preview $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
