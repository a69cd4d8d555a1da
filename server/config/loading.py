"""Loading: YAML, `${ENV}` / `${ENV:-default}` interpolation, validation into a
`GatewayConfig`, and errors that name the path of the bad field."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ai_service.config.base import ConfigError
from ai_service.config.clouds import CLOUD_SECRET_PATHS
from ai_service.config.gateway import GatewayConfig

CONFIG_ENV_VAR = "AI_SERVICE_CONFIG"

_ENV_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def interpolate_env(value: Any, env: Mapping[str, str]) -> Any:
    """Replace `${NAME}` and `${NAME:-default}` in every string of a parsed YAML tree;
    every variable that is unset (and has no default) is named in one ConfigError."""
    unset: list[str] = []
    tree = _interpolate(value, env, "", unset)
    if unset:
        raise ConfigError(*unset)
    return tree


def _interpolate(value: Any, env: Mapping[str, str], path: str, unset: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, env, _join(path, str(k)), unset) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, f"{path}[{i}]", unset) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match["name"], match["default"]
        if name in env:
            return env[name]
        if default is not None:
            return default
        unset.append(f"{path or '<root>'}: environment variable {name} is not set")
        return ""

    return _ENV_REF.sub(substitute, value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def parse_config(raw: Any, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Validate a parsed YAML tree into a GatewayConfig, or raise ConfigError naming the field."""
    if not isinstance(raw, dict):
        raise ConfigError("<root>: the configuration must be a mapping")
    _refuse_literal_provider_keys(raw)
    env = os.environ if env is None else env
    tree = interpolate_env(raw, env)
    try:
        # The environment also decides the providers' proxies (egress.trust_env).
        return GatewayConfig.model_validate(tree, context={"env": env})
    except ValidationError as exc:
        raise ConfigError(*_describe(exc)) from None


def with_sections(config: GatewayConfig, sections: Mapping[str, Any]) -> GatewayConfig:
    """`config` with whole top-level sections replaced, checked again as a whole (a
    reload keeps the running `server` section, and the two must still agree)."""
    fields = {name: getattr(config, name) for name in GatewayConfig.model_fields}
    try:
        return GatewayConfig.model_validate({**fields, **sections})
    except ValidationError as exc:
        raise ConfigError(*_describe(exc)) from None


_WHOLE_ENV_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")


def _refuse_literal_provider_keys(raw: dict[str, Any]) -> None:
    """A provider key written into the file would be one leaked file away from misuse."""
    providers = raw.get("providers")
    for i, provider in enumerate(providers if isinstance(providers, list) else ()):
        key = provider.get("api_key") if isinstance(provider, dict) else None
        if isinstance(key, str) and not _WHOLE_ENV_REF.fullmatch(key):
            raise ConfigError(
                f"providers[{i}].api_key: give the key as an environment variable "
                f"(${{NAME}}) or with api_key_file, not written into the config"
            )
        for path in CLOUD_SECRET_PATHS:
            value: Any = provider
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            if isinstance(value, str) and not _WHOLE_ENV_REF.fullmatch(value):
                raise ConfigError(
                    f"providers[{i}].{'.'.join(path)}: give it as an environment variable "
                    f"(${{NAME}}), not written into the config"
                )


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    return parse_config(raw, env)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's quote of the line: that line may hold
    a caller key, and this message is logged."""
    if not isinstance(error, yaml.MarkedYAMLError):
        # A ReaderError names a bad character by its code and position: no file text.
        return " ".join(str(error).split())
    parts = [
        f"{text} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else text
        for text, mark in (
            (error.context, error.context_mark),
            (error.problem, error.problem_mark),
        )
        if text
    ]
    return ", ".join(parts)


def _describe(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        location = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]
        ).lstrip(".")
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{location}: {message}" if location else message)
    return lines
