"""The gRPC service config the clients use unless told otherwise.

`service_config.json` (shipped in the package) is the standard gRPC JSON form: per
method a deadline and a retry policy that retries UNAVAILABLE with exponential
backoff. The same file is loaded by the Node example (`examples/node/chat.js`), so
every client of the gateway can share one retry and deadline policy. The Python
clients apply its deadlines per call instead, so that `timeout=None` means none.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = [
    "CHANNEL_SERVICE_CONFIG",
    "DEFAULT_SERVICE_CONFIG",
    "METHOD_DEADLINES",
    "SERVICE_CONFIG_FILE",
]

SERVICE_CONFIG_FILE = "service_config.json"

#: The JSON text of `client/service_config.json`.
DEFAULT_SERVICE_CONFIG: str = (
    resources.files(__package__).joinpath(SERVICE_CONFIG_FILE).read_text("utf-8")
)

_METHOD_CONFIG: list[dict[str, Any]] = json.loads(DEFAULT_SERVICE_CONFIG)["methodConfig"]

#: Each method's deadline in the file, in seconds: the Python clients apply it per call.
METHOD_DEADLINES: dict[str, float] = {
    name["method"]: float(entry["timeout"].removesuffix("s"))
    for entry in _METHOD_CONFIG
    if "timeout" in entry
    for name in entry["name"]
}

#: What the Python clients give their channel: the file without its deadlines, which
#: gRPC would impose even on a call made with `timeout=None` (no deadline).
CHANNEL_SERVICE_CONFIG: str = json.dumps(
    {"methodConfig": [{k: v for k, v in e.items() if k != "timeout"} for e in _METHOD_CONFIG]}
)
