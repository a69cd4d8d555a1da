"""`ai-service check --config FILE`: everything a start would refuse, found without
starting, each problem naming its field; exit 0 when fine, 2 otherwise. Also
`--version`, and the CPUs `--workers` defaults to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ai_service import __main__ as cli
from ai_service.runtime.cpus import cgroup_quota
from tests.conftest import PROVIDER_KEY_VARIABLE, config_tree, write_config

SIMULATOR = "http://127.0.0.1:9"  # never called: check starts nothing


def run_check(
    tmp_path: Path, tree: dict[str, Any] | str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    path = tmp_path / "config.yaml"
    if isinstance(tree, str):
        path.write_text(tree, encoding="utf-8")
    else:
        write_config(path, tree)
    code = cli.main(["check", "--config", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_good_config_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_check(tmp_path, config_tree(SIMULATOR), capsys)
    assert code == 0, output
    assert "OK" in output


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"models": [{"name": "m", "provider": "nope", "upstream_model": "x"}]},
            "models[0].provider: unknown provider 'nope'",
        ),
        ({"server": {"listen": "nowhere"}}, "server.listen: expected HOST:PORT"),
        (
            {
                "providers": [
                    {
                        "name": "p",
                        "base_url": "ftp://x",
                        "api_key": "${" + PROVIDER_KEY_VARIABLE + "}",
                    }
                ]
            },
            "providers[0]: base_url must start with http:// or https://",
        ),
        (
            {"egress": {"proxy": "https://proxy.example:3128"}},
            "egress.proxy: a https:// proxy is not supported",
        ),
        (
            {"egress": {"proxy": "http://proxy.example:3128/some/path"}},
            "egress.proxy: the proxy URL has a path",
        ),
        (
            {"observability": {"audit": {"path": "${NOT_SET_ANYWHERE}/audit.jsonl"}}},
            "observability.audit.path: environment variable NOT_SET_ANYWHERE is not set",
        ),
    ],
)
def test_each_field_error_is_named_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], expected: str
) -> None:
    code, output = run_check(tmp_path, {**config_tree(SIMULATOR), **change}, capsys)
    assert code == 2
    assert expected in output


def test_yaml_that_does_not_parse_names_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = run_check(tmp_path, "server: {listen: [\n", capsys)
    assert code == 2
    assert "not valid YAML" in output and "line" in output


def test_an_audit_path_that_cannot_be_created_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    tree = config_tree(SIMULATOR)
    tree["observability"] = {"audit": {"path": str(blocker / "audit.jsonl")}}
    code, output = run_check(tmp_path, tree, capsys)
    assert code == 2
    assert f"observability.audit.path: {blocker} is not a directory" in output
    tree["observability"] = {"audit": {"path": str(tmp_path)}}
    assert "is a directory" in run_check(tmp_path, tree, capsys)[1]


def test_every_problem_is_reported_not_only_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = config_tree(SIMULATOR)
    tree["server"]["tls"] = {
        "cert_file": str(tmp_path / "no.pem"),
        "key_file": str(tmp_path / "no.key"),
    }
    tree["observability"] = {"audit": {"path": str(tmp_path)}}
    code, output = run_check(tmp_path, tree, capsys)
    assert code == 2
    assert "server.tls" in output and "observability.audit.path" in output


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("ai-service ")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 2),
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu.cfs_quota_us": "300000\n", "cpu.cfs_period_us": "100000\n"}, 3),
        ({}, None),
    ],
)
def test_the_cgroup_quota_in_whole_cpus(
    tmp_path: Path, files: dict[str, str], expected: int | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert cgroup_quota(tmp_path) == expected
