"""ai-service: a gRPC inference gateway (installed as the `ai_service` package).

Importing the package does nothing else: `python -m ai_service` blocks SIGHUP on its
first line, and everything imported before that line widens the window in which a
reload signal would kill a starting process. `__version__` is read on first use.
"""

from __future__ import annotations


def __getattr__(name: str) -> str:
    if name != "__version__":
        raise AttributeError(name)
    from importlib import metadata

    try:
        return metadata.version("ai-service")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"
