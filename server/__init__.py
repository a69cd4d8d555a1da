"""ai-service: a gRPC inference gateway (installed as the `ai_service` package)."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("ai-service")
except metadata.PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
