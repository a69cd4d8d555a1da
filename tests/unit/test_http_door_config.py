"""`server.http`: the HTTP door's listener, off unless set (on for the embedded default),
never off loopback with the demo key nor in plaintext beside a TLS gRPC listener."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ai_service import __main__ as cli
from ai_service.config import (
    EMBEDDED_HTTP_LISTEN,
    ConfigError,
    embedded_default,
    parse_config,
    with_http_listen,
)
from tests.conftest import config_tree, write_config

SIMULATOR = "http://127.0.0.1:9"


def tree(**server: Any) -> dict[str, Any]:
    return {
        "server": server,
        "auth": {"keys": [{"name": "k", "key": "caller-secret-0123"}]},
        "providers": [{"name": "p", "base_url": "http://127.0.0.1:9/v1"}],
        "models": [{"name": "m", "provider": "p", "upstream_model": "u"}],
    }


def test_the_door_is_off_unless_configured_and_on_in_the_embedded_default() -> None:
    assert parse_config(tree(), env={}).server.http.listen is None
    embedded = embedded_default(SIMULATOR)
    assert embedded.server.http.listen == EMBEDDED_HTTP_LISTEN == "127.0.0.1:50080"
    moved = with_http_listen(embedded, "127.0.0.1:6080")
    assert moved.server.http.listen == "127.0.0.1:6080"
    assert moved.server.listen == embedded.server.listen
    assert moved.server.http.max_body_bytes == 8 * 1024 * 1024


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"http": {"listen": "nowhere"}}, "server.http.listen"),
        ({"http": {"listen": "127.0.0.1:8000", "max_body_bytes": 0}}, "max_body_bytes"),
        ({"http": {"listen": "127.0.0.1:8000", "lisen": 1}}, "server.http.lisen"),
        (
            {"listen": "127.0.0.1:8000", "http": {"listen": "127.0.0.1:8000"}},
            "server.http.listen: is server.listen",
        ),
        (
            {
                "tls": {"cert_file": "c.pem", "key_file": "k.pem"},
                "http": {"listen": "0.0.0.0:8000"},
            },
            "server.http.listen: the HTTP door serves plaintext",
        ),
    ],
)
def test_bad_door_settings_name_the_field(server: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config(tree(**server), env={})


def test_both_on_port_zero_is_two_free_ports_not_a_clash() -> None:
    config = parse_config(tree(listen="127.0.0.1:0", http={"listen": "127.0.0.1:0"}), env={})
    assert config.server.http.listen == "127.0.0.1:0"


def test_the_demo_key_keeps_the_door_on_loopback() -> None:
    embedded = embedded_default(SIMULATOR)
    assert with_http_listen(embedded, "[::1]:6080").server.http.host == "::1"
    with pytest.raises(ConfigError, match=r"server\.http\.listen: the demo key is enabled"):
        with_http_listen(embedded, "0.0.0.0:6080")


def test_check_names_the_doors_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "config.yaml", config_tree(SIMULATOR))
    assert cli.main(["check", "--config", str(path), "--http-listen", "127.0.0.1:6080"]) == 0
    assert "HTTP door on 127.0.0.1:6080" in capsys.readouterr().out
    assert cli.main(["check", "--config", str(path)]) == 0
    assert "HTTP door" not in capsys.readouterr().out
    assert cli.main(["check", "--config", str(path), "--http-listen", "nowhere"]) == 2
    assert "server.http.listen" in capsys.readouterr().err
