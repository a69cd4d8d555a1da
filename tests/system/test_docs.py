"""The docs run as written: every ```python and ```sh block in README.md, CONTRIBUTING.md
and docs/ runs against a real gateway (the embedded default, on a free port standing in
for 127.0.0.1:50051), and every ```yaml block is a config the gateway accepts (a fragment
is checked on top of a minimal config). A block marked `no-run` after its language (a
command that starts a server or needs a cluster) is the only exception, and says so where
it stands. Links between the pages point at files that exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_service.config import parse_config
from tests.conftest import REPO
from tests.processes import ANY_PORT, VENV_BIN, clean_env, start_gateway_process

PAGES = sorted([REPO / "README.md", REPO / "CONTRIBUTING.md", *(REPO / "docs").glob("*.md")])
README_ADDRESS = "127.0.0.1:50051"
#: The embedded default's HTTP door, as the pages write it.
README_HTTP_ADDRESS = "127.0.0.1:50080"
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    runs: bool
    code: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(language: str) -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            words = match["info"].split()
            if not words or words[0] != language:
                continue
            indent = match["indent"]
            code = "".join(line.removeprefix(indent) for line in match["body"].splitlines(True))
            line = text.count("\n", 0, match.start()) + 1
            found.append(Block(page, line, language, "no-run" not in words[1:], code))
    return found


def runnable(language: str) -> list[Any]:
    return [pytest.param(b, id=b.name) for b in blocks(language) if b.runs]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The embedded default, as `make run` starts it, on ports it picks: the address each
    address the pages write stands for (gRPC's, the HTTP door's)."""
    logs = tmp_path_factory.mktemp("docs-gateway")
    running = start_gateway_process(["--metrics-listen", ANY_PORT], logs)
    assert running.http_address is not None
    try:
        yield {README_ADDRESS: running.address, README_HTTP_ADDRESS: running.http_address}
    finally:
        running.process.kill()


def run(argv: list[str], code: str, addresses: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = clean_env(PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    for written, actual in addresses.items():
        code = code.replace(written, actual)
    return subprocess.run(
        [*argv, code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("block", runnable("python"))
def test_python_blocks_run(block: Block, gateway: dict[str, str]) -> None:
    result = run([sys.executable, "-c"], block.code, gateway)
    assert result.returncode == 0, f"{block.name}:\n{result.stderr}"


@pytest.mark.parametrize("block", runnable("sh"))
def test_shell_blocks_run(block: Block, gateway: dict[str, str]) -> None:
    result = run(["bash", "-euo", "pipefail", "-c"], block.code, gateway)
    assert result.returncode == 0, f"{block.name}:\n{result.stdout}\n{result.stderr}"


MINIMAL = {
    "auth": {"keys": [{"name": "docs", "key": "docs-key-0123456789abcdef"}]},
    "providers": [{"name": "p", "kind": "openai", "base_url": "http://127.0.0.1:9/v1"}],
    "models": [{"name": "m", "provider": "p", "upstream_model": "m"}],
}


def dummy_environment(text: str) -> dict[str, str]:
    """A value for every `${NAME}` without a default, as the block's reader would set them."""
    names = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)
    return {name: f"docs-value-{name.lower()}-0123456789" for name in names}


@pytest.mark.parametrize("block", runnable("yaml"))
def test_yaml_blocks_are_configs_the_gateway_accepts(block: Block) -> None:
    tree = yaml.safe_load(block.code)
    assert isinstance(tree, dict), block.name
    if "providers" not in tree:  # a fragment: on top of a minimal config
        tree = {**MINIMAL, **tree}
    parse_config(tree, env=dummy_environment(block.code))


def test_the_readme_config_is_examples_openai_yaml() -> None:
    (readme,) = [b for b in blocks("yaml") if b.page.name == "README.md"]
    example = (REPO / "examples" / "openai.yaml").read_text(encoding="utf-8")
    without_comments = "".join(
        line for line in example.splitlines(True) if not line.startswith("#")
    )
    assert readme.code == without_comments


def test_every_block_that_does_not_run_says_so() -> None:
    """Only languages this test runs may be marked no-run; others never claim to run."""
    marked = [b for language in ("python", "sh", "yaml") for b in blocks(language) if not b.runs]
    assert all(b.language in ("python", "sh", "yaml") for b in marked)
    assert len(marked) < len(blocks("python")) + len(blocks("sh")) + len(blocks("yaml"))


LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_point_at_files_that_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    broken = [
        m["target"]
        for m in LINK.finditer(text)
        if "://" not in m["target"] and not (page.parent / m["target"]).exists()
    ]
    assert not broken, f"{page.relative_to(REPO)} links to missing files: {broken}"


def test_no_page_cites_a_file_outside_the_repository() -> None:
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert "FACTS.md" not in text and "DESIGN.md" not in text, page
