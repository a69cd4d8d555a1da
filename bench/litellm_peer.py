"""`--peers litellm`: the same unary work through a LiteLLM proxy, side by side.

LiteLLM (`litellm[proxy]`, ~750 MB) goes into its own virtualenv, `bench/.litellm-venv`
(ignored by git), created on first use. It refuses a weak master key, so a random
`sk-…` key goes into an environment variable the config names (`os.environ/NAME`). One
`openai/…` model points at the simulator with `api_base`. If the install or the start
fails, the section is skipped with a note.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml

from bench.procs import LOOPBACK, REPO, free_port, running
from bench.stack import MODEL, UPSTREAM_MODEL, Endpoint

VENV = REPO / "bench" / ".litellm-venv"
MASTER_KEY_ENV = "BENCH_LITELLM_MASTER_KEY"
INSTALL_TIMEOUT = 900.0


def ensure_installed(log: Path) -> str:
    """Install litellm[proxy] into its venv if needed; returns "" or why it is unavailable."""
    executable = VENV / "bin" / "litellm"
    if executable.exists():
        return ""
    print(f"  installing litellm[proxy] into {VENV} (once; ~750 MB)", flush=True)
    try:
        with open(log, "ab") as out:
            subprocess.run(["python3", "-m", "venv", str(VENV)], check=True, stdout=out, stderr=out)
            subprocess.run(
                [str(VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"],
                check=True,
                stdout=out,
                stderr=out,
                timeout=INSTALL_TIMEOUT,
            )
    except (OSError, subprocess.SubprocessError) as error:
        return f"LiteLLM not measured: installing litellm[proxy] failed ({error}); see {log}"
    return "" if executable.exists() else "LiteLLM not measured: no litellm executable"


@contextlib.contextmanager
def proxy(workdir: Path, simulator: Endpoint) -> Iterator[tuple[Endpoint, str]]:
    """A LiteLLM proxy (1 worker) on a free port; yields it and its master key."""
    key = "sk-" + secrets.token_hex(24)
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{UPSTREAM_MODEL}",
                    "api_base": f"{simulator.http}/v1",
                    "api_key": "anything",
                },
            }
        ],
        "general_settings": {"master_key": f"os.environ/{MASTER_KEY_ENV}"},
        "litellm_settings": {"telemetry": False},
    }
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    argv = [str(VENV / "bin" / "litellm"), "--config", str(path)]
    argv += ["--host", LOOPBACK, "--port", str(port), "--num_workers", "1"]
    env = {MASTER_KEY_ENV: key, "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR"}
    with running(argv, port=port, log=workdir / "litellm.log", env=env, ready_timeout=180) as p:
        yield Endpoint("litellm", port, p.pid), key
