"""What a start would refuse, found without starting: `ai-service check` and the
supervisor (before it forks) run it on a loaded config, and so does every start.

Loading the file already checked its YAML, its `${ENV}` references and every field. This
adds what needs the machine: TLS files readable, PEM and matching their keys; the audit
log's folder writable by this user; the HTTP door's server installed where it is on.
Each problem names its field.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

from ai_service.config import ConfigError, GatewayConfig, Grants, TeamSettings
from ai_service.runtime.tls import server_credentials


def problems(config: GatewayConfig) -> list[str]:
    """Every problem found, each naming its field; empty when the config can start."""
    found: list[str] = []
    if config.server.tls is not None:
        try:
            server_credentials(config.server.tls)
        except ConfigError as error:
            found.extend(error.problems)
    audit = config.observability.audit.path
    if audit is not None and (problem := _unwritable(Path(audit))) is not None:
        found.append(f"observability.audit.path: {problem}")
    if config.server.http.listen is not None and importlib.util.find_spec("uvicorn") is None:
        found.append(
            "server.http.listen: the HTTP door needs uvicorn, which is not installed "
            "(pip install 'ai-service[gateway]')"
        )
    return found


def require_startable(config: GatewayConfig) -> None:
    """Raise ConfigError listing every problem, if any."""
    if found := problems(config):
        raise ConfigError(*found)


def worker_problems(config: GatewayConfig, workers: int) -> list[str]:
    """What only `--workers N` would refuse: budgets kept in each worker's memory would
    each allow the whole budget."""
    if workers < 2 or config.shared_state.backend != "memory":
        return []
    auth = config.auth
    sections: tuple[tuple[str, Sequence[Grants | TeamSettings]], ...] = (
        ("keys", auth.keys),
        ("roles", auth.roles),
        ("certificates", auth.certificates),
        ("teams", auth.teams),
    )
    budgeted = [
        f"auth.{section}[{i}].budget"
        for section, entries in sections
        for i, entry in enumerate(entries)
        if entry.budget is not None
    ]
    if not budgeted:
        return []
    return [
        f"{budgeted[0]}: budgets across --workers {workers} need shared_state.backend: redis "
        f"(each worker's memory would allow the whole budget); use Redis, or --workers 1"
    ]


def _unwritable(path: Path) -> str | None:
    """Why this process could not append to `path` (creating its folders), or None."""
    if path.is_dir():
        return f"{path} is a directory"
    if path.exists():
        return None if os.access(path, os.W_OK) else f"{path} is not writable by this user"
    # The nearest folder that exists must let this user create what is missing below it.
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a directory"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot create {path}: {folder} is not writable by this user"
    return None
