# ai-service: the gRPC inference gateway.
#
#   docker build -t ai-service .
#   docker run --rm -p 50051:50051 -e OPENAI_API_KEY -e AI_SERVICE_KEY \
#     -v "$PWD/examples/openai.yaml:/etc/ai-service/config.yaml:ro" ai-service
#
# `docker run ... ai-service check --config /etc/ai-service/config.yaml` says what a start
# would refuse (exit 2) without starting.
#
# The container needs a config (mounted at /etc/ai-service/config.yaml, or pass
# `--config PATH`): the embedded default (`ai-service` with no config: built-in
# simulator and the demo key) only ever binds loopback, so it cannot be reached
# from outside the container. A config for a container listens on 0.0.0.0:50051.
#
# SIGTERM drains: in-flight calls get server.shutdown_grace_seconds (default 30 s) to
# finish, so give `docker stop -t` / Kubernetes terminationGracePeriodSeconds a bit more.

# --- build: install the locked runtime dependencies, then the package, into a virtualenv --
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/ai-service
WORKDIR /src
# The lock first, so the dependency layer is rebuilt only when the lock changes. Every
# package is pinned with its hashes; --no-deps because the lock is complete.
COPY requirements/build.txt requirements/runtime.txt requirements/
RUN /opt/ai-service/bin/pip install --require-hashes --no-deps -r requirements/build.txt \
    && /opt/ai-service/bin/pip install --require-hashes --no-deps --no-build-isolation \
       -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY protos/ protos/
COPY server/ server/
COPY client/ client/
RUN /opt/ai-service/bin/pip install --no-deps --no-build-isolation . \
    && /opt/ai-service/bin/pip check

# --- run: the virtualenv alone, as an unprivileged user -----------------------------------
FROM python:3.11-slim-bookworm

# AI_SERVICE_LISTEN: examples/openai.yaml listens there (loopback outside a container).
ENV PATH=/opt/ai-service/bin:$PATH \
    AI_SERVICE_LISTEN=0.0.0.0:50051 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# /var/log/ai-service is where examples/config.yaml writes its audit log.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin ai-service \
    && mkdir -p /etc/ai-service /var/log/ai-service \
    && chown ai-service /var/log/ai-service
COPY --from=build /opt/ai-service /opt/ai-service

USER ai-service
# 50051: gRPC. 50080: the HTTP door (OpenAI/Anthropic-compatible), where the config opens
# it (server.http.listen: 0.0.0.0:50080); publish it only then.
EXPOSE 50051 50080
# grpc.health.v1 Check on the server as a whole; exit 1 unless SERVING (health needs no key).
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["ai-client", "--addr", "127.0.0.1:50051", "--timeout", "3", "health"]

ENTRYPOINT ["ai-service"]
CMD ["--config", "/etc/ai-service/config.yaml"]
