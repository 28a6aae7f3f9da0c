"""Masking what an upstream's error text must not carry to a client, or to the log.

An upstream writes its error messages for its own operators: they may echo the
`Authorization` header Turnout sent, dump every request header, or name the internal
host:port Turnout reached it at. `Redactor` gives two views of such text:

- `for_log`: every secret the config holds masked (provider `api_key`s, header values,
  credentials in a URL, Turnout's own keys); the rest stays, for the operator.
- `for_client`: that, plus every token-shaped string (`sk-…`, `Bearer …`, credential
  header values, long hex or base64 runs) masked and every address (URL, IP, host:port,
  a configured upstream host) replaced by the deployment's public label.

The configured secrets are compiled into one pattern per config, in every spelling an
upstream may echo them (policies.secret_pattern): a reload builds a new gateway and with
it a new `Redactor`. The token and address rules are pure functions. An upstream error's
`type`, `code` and `param` reach a client only as short identifiers (`FIELD_SHAPE`).
No library does this job on free text (secret scanners such as detect-secrets judge
files line by line and do not rewrite), hence the patterns below.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from policies.config import TurnoutConfig
from policies.redis_client import RedisAddress
from policies.secret_pattern import SecretPattern
from providers.errors import UpstreamError
from providers.http_settings import HTTPSettings

MASK = "[redacted]"
# What an error's `type`, `code` and `param` may be to reach a client: an identifier or a
# JSON path (`messages[0].content`). Anything else is the upstream's prose, or a secret.
FIELD_SHAPE = re.compile(r"[A-Za-z0-9_.\[\]\-]{1,64}")

# ---- token-shaped strings (pure) -----------------------------------------------------

_CREDENTIAL_NAMES = (
    r"(?:proxy-)?authorization|x-api-key|x-goog-api-key|api[-_]?key|cookie|set-cookie"
    r"|password|passwd|client[-_]secret|secret|access[-_]token|refresh[-_]token"
)
# `name: value` or `"name": "value"` or `name=value`: a header dump, JSON, a query string.
_CREDENTIAL_FIELD = re.compile(
    rf"(?i)(?<![\w-])((?:{_CREDENTIAL_NAMES})[\"']?\s*[:=]\s*[\"']?)([^\r\n\"',;&]+)"
)
_BEARER = re.compile(r"(?i)\bbearer\s+[^\s\"',;]+")
_BASIC = re.compile(r"(?i)\bbasic\s+([A-Za-z0-9+/]{8,}={0,2})(?![\w+/=])")
# Vendors' key formats: OpenAI/Anthropic/Stripe-style `sk-`, Groq, GitHub, Hugging Face,
# Slack, GitLab, Replicate, xAI, Google, AWS access key ids, and JWTs.
_PREFIXED = re.compile(
    r"\b(?:sk|pk|rk)[-_][A-Za-z0-9_*\-]{3,}"
    r"|\b(?:gsk|ghp|gho|ghu|ghs|github_pat|hf|xox[abpr]|glpat|r8)_[A-Za-z0-9_\-]{8,}"
    r"|\bxai-[A-Za-z0-9_\-]{8,}"
    r"|\bAIza[0-9A-Za-z_\-]{20,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"
)
# What every match of _BEARER, _BASIC or _PREFIXED starts with (without their `\b`, so
# it finds more, never less): a log line's strings (ids, model names, paths) seldom hold
# one, and one search for it is cheaper than three subs. Plain literals and classes, no
# `(?i)` or `\b` in front, let `re` skip ahead fast.
_CREDENTIAL_START = re.compile(
    r"[bB][eE][aA][rR][eE][rR]|[bB][aA][sS][iI][cC]|[spr]k[-_]"
    r"|(?:gsk|ghp|gho|ghu|ghs|github_pat|hf|xox[abpr]|glpat|r8)_|xai-|AIza|AKIA|eyJ"
)
_RUN = re.compile(r"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9+/_\-]{32,}={0,2}")
_SEPARATORS = re.compile(r"[-_/+]")
_HEX = re.compile(r"[0-9a-fA-F]+")
_TAIL = ".,;:!?"
MIN_RUN_CHARS = 32
# Model names are long runs too ("Qwen2-VL-72B-Instruct-GPTQ-Int4"), but of short words;
# a key or a digest has long stretches between separators.
_MIN_MEAN_SEGMENT = 8


def mask_tokens(text: str) -> str:
    """`text` with every token-shaped string masked: credential header or field values,
    `Bearer`/`Basic` credentials, vendors' key formats, long hex and base64 runs."""
    text = _CREDENTIAL_FIELD.sub(lambda m: m.group(1) + MASK, text)
    text = _BEARER.sub(lambda m: _keep_tail(m.group(0), MASK), text)
    text = _BASIC.sub(lambda m: MASK if _looks_encoded(m.group(1)) else m.group(0), text)
    text = _PREFIXED.sub(MASK, text)
    return _RUN.sub(lambda m: MASK if looks_like_token(m.group(0)) else m.group(0), text)


def mask_credentials(text: str) -> str:
    """`text` with `Bearer`/`Basic` credentials and vendors' key formats masked: the
    token shapes that are never anything else, so a log line can lose them at no cost
    to the operator (long runs may be request ids or digests, and `api_key: ...` the
    text of a config error)."""
    if _CREDENTIAL_START.search(text) is None:
        return text
    # The scheme stays: the operator reads which credential it was.
    text = _BEARER.sub(lambda m: _keep_scheme(m.group(0)), text)
    text = _BASIC.sub(lambda m: _keep_scheme(m.group(0), m.group(1)), text)
    return _PREFIXED.sub(MASK, text)


def _keep_scheme(found: str, encoded: str | None = None) -> str:
    if encoded is not None and not _looks_encoded(encoded):
        return found
    scheme = found.split(None, 1)[0]
    return _keep_tail(found, f"{scheme} {MASK}")


def _keep_tail(found: str, replacement: str) -> str:
    # What ends a sentence or a bracket is not part of the token or address before it.
    kept = found.rstrip(_TAIL)
    return replacement + found[len(kept) :]


def looks_like_token(run: str) -> bool:
    """Whether a long run of base64/hex characters is a key or digest rather than words."""
    bare = run.rstrip("=")
    if len(bare) < MIN_RUN_CHARS:
        return False
    if _HEX.fullmatch(bare):
        return True
    if not any(c.isdigit() for c in bare) or not any(c.isalpha() for c in bare):
        return False
    segments = len(_SEPARATORS.findall(bare)) + 1
    return len(bare) / segments >= _MIN_MEAN_SEGMENT


def _looks_encoded(word: str) -> bool:
    # "Basic authentication" is prose; "dXNlcjpwYXNz" is not: base64 has capitals inside
    # words, digits or padding.
    return any(c.isdigit() or c in "+/=" for c in word) or any(c.isupper() for c in word[1:])


# ---- addresses (pure) ----------------------------------------------------------------

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>`()]+")
# Python's socket addresses, as OSError texts show them: ('10.0.0.5', 8000[, 0, 0]).
_SOCKET_ADDRESS = re.compile(r"\(\s*['\"][^'\"\s]+['\"]\s*,\s*\d{1,5}(?:\s*,\s*\d+){0,2}\s*\)")
# At least one colon inside: `messages[1]` or `[0a]` is an index, not an address.
_BRACKETED_IPV6 = re.compile(r"\[(?=[0-9A-Fa-f.]*:)[0-9A-Fa-f:.]+(?:%[\w.]+)?\](?::\d{1,5})?")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?(?![\d])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
# host:port, the host with at least one letter (so "12:30" is a time, not an address).
_HOST_PORT = re.compile(
    rf"(?<![\w.@/\-])(?=[\w.\-]*[A-Za-z])({_LABEL}(?:\.{_LABEL})*):\d{{1,5}}(?![\w])"
)
# Names only ever internal: a message that says "vllm-0.svc.cluster.local" says too much.
_INTERNAL_HOST = re.compile(
    rf"(?i)(?<![\w.\-])(?:localhost|(?:{_LABEL}\.)+(?:local|internal|svc|lan|corp|intranet"
    rf"|home\.arpa))(?![\w\-])"
)


def mask_addresses(text: str, label: str) -> str:
    """`text` with every URL, IP address, socket address, host:port and internal host
    name replaced by `label`."""

    def to_label(_: re.Match[str]) -> str:
        return label

    text = _URL.sub(lambda m: _keep_tail(m.group(0), label), text)
    text = _SOCKET_ADDRESS.sub(to_label, text)
    text = _BRACKETED_IPV6.sub(to_label, text)
    text = _IPV4.sub(lambda m: label if _is_ip(m.group(0).split(":")[0]) else m.group(0), text)
    text = _IPV6.sub(lambda m: label if _is_ip(m.group(0)) else m.group(0), text)
    text = _HOST_PORT.sub(to_label, text)
    return _INTERNAL_HOST.sub(to_label, text)


def _is_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


# ---- what a config holds -------------------------------------------------------------


def configured_secrets(config: TurnoutConfig) -> set[str]:
    """Every secret the config holds: providers' API keys, header values and URL
    credentials, the state store's URL credentials, and Turnout's own (unhashed) keys."""
    found: set[str] = set()
    for settings in config.providers.values():
        if isinstance(settings, HTTPSettings):
            if settings.api_key:
                found.add(settings.api_key)
            found.update(settings.headers.values())
            found.update(url_credentials(settings.base_url))
            load_metrics = getattr(settings, "load_metrics", None)  # kind: openai's
            if load_metrics is not None:
                found.update(url_credentials(load_metrics.url))
    for url in _state_urls(config):
        found.update(url_credentials(url))
    s3 = config.storage.s3
    if s3 is not None:
        found.update(v for v in (s3.key_id, s3.secret) if v)
        found.update(url_credentials(s3.endpoint))
    telemetry = config.telemetry  # a collector's credentials (a Langfuse key pair)
    found.update(telemetry.headers.values())
    found.update(url_credentials(telemetry.otlp_endpoint))
    if config.status_page.session_secret:  # signs the status page's login cookie
        found.add(config.status_page.session_secret)
    keys = [k.key for k in config.keys] + [k for t in config.teams.values() for k in t.keys]
    found.update(k for k in keys if not k.startswith("sha256:"))
    return found


def url_credentials(url: str | None) -> set[str]:
    """The user, password (alone, joined, and as a Basic credential) and query values
    of `url`: a base URL may carry `https://user:pass@host/?key=...`."""
    if not url:
        return set()
    parts = urlsplit(url)
    found = {value for _, value in parse_qsl(parts.query)}
    user, password = parts.username, parts.password
    if password:
        pair = f"{user or ''}:{password}"
        found.update({password, pair, base64.b64encode(pair.encode()).decode()})
    if user:
        found.add(user)
    return found


def configured_hosts(config: TurnoutConfig) -> set[str]:
    """The host names of the configured upstreams and state store."""
    urls = [s.base_url for s in config.providers.values() if isinstance(s, HTTPSettings)]
    urls.extend(_state_urls(config))
    if config.storage.s3 is not None:
        urls.append(config.storage.s3.endpoint or "")
    return {host for url in urls if (host := urlsplit(url).hostname)}


def _state_urls(config: TurnoutConfig) -> list[str]:
    """The state store's URL, or each of a cluster's nodes, as URLs."""
    address = RedisAddress.of(config.state)
    return [] if address is None else address.urls()


def _alternation(values: Iterable[str]) -> re.Pattern[str] | None:
    # Longest first: a secret that contains another is masked whole.
    ordered = sorted(set(values), key=lambda v: (-len(v), v))
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None


_PLAIN_SCALARS = frozenset({int, float, bool})
_CLEAN_CACHE_SIZE = 4096
_CLEAN_CACHE_CHARS = 256


@dataclass(frozen=True, slots=True)
class Redactor:
    """One config's masking of upstream text: built once per config, immutable."""

    secrets: SecretPattern | None = None
    hosts: re.Pattern[str] | None = None
    # Log strings `scrub` found nothing in: most recur on every line (model, endpoint,
    # deployment, outcome), and the request's log line is scrubbed twice (router.accounting
    # and router.logging). A pure function of the string and this config's patterns, so
    # caching it masks exactly what scrubbing again would; bounded in count and length.
    _clean: dict[str, None] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def of(cls, secrets: Iterable[str] = (), hosts: Iterable[str] = ()) -> Redactor:
        names = _alternation(hosts)
        host_pattern = (
            re.compile(rf"(?i)(?<![\w.\-])(?:{names.pattern})(?::\d{{1,5}})?(?![\w\-])")
            if names is not None
            else None
        )
        return cls(SecretPattern.of(secrets), host_pattern)

    @classmethod
    def from_config(cls, config: TurnoutConfig) -> Redactor:
        return cls.of(configured_secrets(config), configured_hosts(config))

    def for_log(self, text: str) -> str:
        """`text` with the configured secrets masked, in every spelling."""
        return self.secrets.sub(MASK, text) if self.secrets is not None else text

    def for_client(self, text: str, label: str) -> str:
        """`text` fit for a client: secrets and token-shaped strings masked, addresses
        (and the configured upstream hosts) replaced by `label`."""
        # Tokens before addresses, so that a label put in is never taken for a token.
        text = mask_tokens(self.for_log(text))
        text = mask_addresses(text, label)
        return self.hosts.sub(lambda _: label, text) if self.hosts is not None else text

    def public(self, error: UpstreamError, label: str) -> UpstreamError:
        """`error` as a client of deployment `label` may see it: same status, a masked
        message, and `type`, `code` and `param` where they are identifiers that masking
        leaves alone (else dropped; `type` then says only server or client error); the
        upstream's own words (secrets masked) kept in `detail` for the log."""
        fallback = "server_error" if error.status >= 500 else "invalid_request_error"
        return UpstreamError(
            self.for_client(error.message, label),
            failure=error.failure,
            status=error.status,
            type=self.field(error.type, label) or fallback,
            code=self.field(error.code, label),
            param=self.field(error.param, label),
            retry_after=error.retry_after,
            detail=self.for_log(error.detail or error.message),
        )

    def field(self, value: str | None, label: str) -> str | None:
        """An error field fit for a client: an identifier that carries nothing to mask."""
        if value is None or not FIELD_SHAPE.fullmatch(value):
            return None
        return value if self.for_client(value, label) == value else None

    def scrub(self, value: Any) -> Any:
        """A log event's value with the configured secrets and unmistakable credentials
        (`mask_credentials`) masked in every string in it."""
        kind = type(value)  # exact types first: an ABC's isinstance is slow, per log value
        if kind is str:
            return self._scrub_text(value)
        if value is None or kind in _PLAIN_SCALARS:
            return value
        if isinstance(value, str):
            return self._scrub_text(value)
        if kind is dict or isinstance(value, Mapping):
            return self.scrub_fields(value)
        if isinstance(value, list | tuple):
            clean, plain = self._clean, _PLAIN_SCALARS
            return [
                item
                if item is None or type(item) in plain or (type(item) is str and item in clean)
                else self.scrub(item)
                for item in value
            ]
        return value

    def scrub_fields(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """`scrub` of every value of a log event (or of any mapping in one). The same
        masking, with what nearly every value is (a scalar, None, a string already found
        clean) decided inline: a request's log line has ~20 values, some of them lists and
        dicts, and is scrubbed twice (router.accounting and the log's `LogScrubber`); a
        call per value was ~5 % of a relayed request's CPU."""
        clean, plain = self._clean, _PLAIN_SCALARS
        scrubbed: dict[str, Any] = {}
        for name, value in fields.items():
            kind = type(value)
            if value is None or kind in plain or (kind is str and value in clean):
                scrubbed[name] = value
            else:
                scrubbed[name] = self.scrub(value)
        return scrubbed

    def _scrub_text(self, text: str) -> str:
        if text in self._clean:
            return text
        masked = mask_credentials(self.for_log(text))
        if masked == text and len(text) <= _CLEAN_CACHE_CHARS:
            if len(self._clean) >= _CLEAN_CACHE_SIZE:
                self._clean.clear()
            self._clean[text] = None
        return masked
