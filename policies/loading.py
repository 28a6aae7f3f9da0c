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
from policies.pricing.budget_check import dollar_budget_problems
from policies.redaction import looks_like_token, mask_credentials

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
        config = TurnoutConfig.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(_describe(path, exc, resolved)) from None
    # Needs the prices (the shipped table's too), which the config's own checks do not see.
    if problems := dollar_budget_problems(config):
        raise ConfigError(
            f"{path}: invalid config ({len(problems)} problem(s)):\n  " + "\n  ".join(problems)
        )
    return config


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
    """Every problem, each as `key.path: what is wrong`, with the value it had only where
    that cannot be a secret (`_got`). This text goes to the terminal and, on a reload, to
    the log: the messages lose whatever looks like a credential too."""
    lines = [f"{path}: invalid config ({exc.error_count()} problem(s)):"]
    for error in exc.errors(include_url=False):
        where, _ = locate(error, data)
        message = error["msg"]
        if error["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        got = _got(error["type"], where, error.get("input"))
        lines.append(f"  {where or '<top level>'}: {mask_credentials(message)}{got}")
    return "\n".join(lines)


# Where a value is a credential as often as not: keys, tokens, passwords, header values.
_SECRET_NAME = re.compile(r"(?i)key|token|secret|passw|auth|cookie|credential|header")
# The errors whose value is shown: a number out of range, a choice misspelt. Any other
# value (an unknown key's above all: `apikey: sk-...` is a misspelt credential) is not.
_SHOWN_NUMBERS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})
_SHOWN_CHOICES = frozenset({"enum", "literal_error"})
MAX_SHOWN_CHARS = 40
_NUMBER = re.compile(r"-?\d{1,20}(?:\.\d{1,20})?")


def _secret(where: str) -> bool:
    """Whether any part of the key path names a credential (or a header, whose values
    carry credentials as often as not): its value is never echoed back."""
    return bool(_SECRET_NAME.search(where))


# `scheme://user:password@host`: the credentials; `?token=...`: a query value.
_URL_CREDENTIALS = re.compile(r"(?:(?<=://)|^)[^/?#@\s]*@")
_QUERY_VALUE = re.compile(r"(?<=[?&])([^=&#\s]+)=[^&#\s]*")


def _got(kind: str, where: str, value: Any) -> str:
    """The offending value, for an error line, where it cannot be a secret: a number out
    of range; a short, word-like misspelt choice; a URL without its credentials and query
    values. Nothing under a credential's name, nothing of an unknown key, no mapping or
    list (a provider's whole entry holds its key and headers)."""
    if not where or _secret(where):
        return ""
    if kind in _SHOWN_NUMBERS:
        # A number out of range, or a string that is one (`${PORT}` interpolates a string).
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return f" (got {value!r})" if number or _NUMBER.fullmatch(str(value)) else ""
    if not isinstance(value, str):
        return ""
    if where.endswith("url"):
        value = _QUERY_VALUE.sub(r"\1=***", _URL_CREDENTIALS.sub("***@", value))
    elif kind not in _SHOWN_CHOICES or not _word_like(value):
        return ""
    return f" (got {value!r:.80})"


def _word_like(value: str) -> bool:
    """A value that reads as a word (`openia`, `drpo`), not as a key (`sk-...`, a long run
    of letters and digits)."""
    return (
        len(value) <= MAX_SHOWN_CHARS
        and mask_credentials(value) == value
        and not looks_like_token(value)
        and not any(c.isdigit() for c in value)
    )
