"""The gRPC service config the clients use unless told otherwise.

`service_config.json` (shipped in the package) is the standard gRPC JSON form: per
method a deadline and a retry policy that retries UNAVAILABLE with exponential
backoff. The same file is loaded by the Node example (`examples/node/chat.js`), so
every client of the gateway can share one retry and deadline policy.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["DEFAULT_SERVICE_CONFIG", "SERVICE_CONFIG_FILE"]

SERVICE_CONFIG_FILE = "service_config.json"

#: The JSON text of `client/service_config.json`.
DEFAULT_SERVICE_CONFIG: str = (
    resources.files(__package__ or "client").joinpath(SERVICE_CONFIG_FILE).read_text("utf-8")
)
