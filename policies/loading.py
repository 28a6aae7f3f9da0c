"""Reading the YAML config: `${ENV}` interpolation and errors that name file and key path."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from policies.config import TurnoutConfig
from policies.error_paths import join, locate

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "default.yaml"


class ConfigError(Exception):
    """The config cannot be used; the message names the file, the key path and the need."""


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> TurnoutConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    resolved = _interpolate(raw, os.environ if env is None else env, path, "")
    try:
        return TurnoutConfig.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(_describe(path, exc, resolved)) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's excerpt of the line: that line may hold
    a key."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return type(exc).__name__
    parts = []
    for text, mark in ((exc.context, exc.context_mark), (exc.problem, exc.problem_mark)):
        if text:
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            parts.append(f"{text}{where}")
    return "; ".join(parts) or type(exc).__name__


def _interpolate(value: Any, env: Mapping[str, str], path: Path, where: str) -> Any:
    if isinstance(value, str):
        return _VAR.sub(lambda m: _lookup(m, env, path, where), value)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, path, join(where, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, path, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _lookup(match: re.Match[str], env: Mapping[str, str], path: Path, where: str) -> str:
    name, default = match.group(1), match.group(2)
    if name in env:
        return env[name]
    if default is not None:
        return default
    raise ConfigError(
        f"{path}: {where}: environment variable {name} is not set "
        f"(set it, or write ${{{name}:-default}})"
    )


def _describe(path: Path, exc: ValidationError, data: dict[str, Any]) -> str:
    lines = [f"{path}: invalid config ({exc.error_count()} problem(s)):"]
    for error in exc.errors(include_url=False):
        where, _ = locate(error, data)
        message = error["msg"]
        if error["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        shown = error["type"] != "missing" and where and not _secret(where)
        got = _got(error.get("input")) if shown else ""
        lines.append(f"  {where or '<top level>'}: {message}{got}")
    return "\n".join(lines)


def _secret(where: str) -> bool:
    """Keys, API keys and header values (which carry credentials as often as not) are
    never echoed back, not even in an error about them."""
    last = where.rsplit(".", 1)[-1].split("[", 1)[0]
    secret = last in ("key", "keys", "api_key", "headers")
    return secret or ".keys[" in where or ".key" in where or ".headers." in where


# `scheme://user:password@host`: the credentials; `?token=...`: a query value.
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/?#@\s]*@")
_QUERY_VALUE = re.compile(r"(?<=[?&])([^=&#\s]+)=[^&#\s]*")


def _got(value: Any) -> str:
    """The offending value, for an error line. A mapping or list is not shown at all (a
    provider's whole entry holds its key and headers); a string loses the credentials and
    query values a URL can carry."""
    if isinstance(value, dict | list | tuple):
        return ""
    if isinstance(value, str):
        value = _QUERY_VALUE.sub(r"\1=***", _URL_CREDENTIALS.sub("***@", value))
    return f" (got {value!r:.80})"
