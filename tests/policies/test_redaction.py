"""`policies.redaction` on its own: which strings count as secrets, tokens and addresses,
and that the ordinary words of an error message survive."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from policies.config import TurnoutConfig
from policies.redaction import (
    MASK,
    Redactor,
    configured_secrets,
    looks_like_token,
    mask_addresses,
    mask_credentials,
    mask_tokens,
)
from providers.errors import Failure, UpstreamError

LABEL = "up/model"


def config(**overrides: Any) -> TurnoutConfig:
    raw: dict[str, Any] = {
        "providers": {
            "a": {
                "kind": "openai",
                "base_url": "https://svc:url-pass-123@vllm.example:8443/v1?api-key=query-secret",
                "headers": {"x-org": "header-secret-value", "x-flag": "1"},
            },
            # A backend gets one Authorization header: a URL's credentials or an api_key.
            "b": {
                "kind": "openai",
                "base_url": "https://b.example/v1",
                "api_key": "plain-provider-key",
            },
            "c": {"kind": "anthropic", "api_key": "anthropic-key-abc"},
        },
        "models": {"m": {"deployments": [{"provider": "a", "model": "x"}]}},
        "keys": [{"key": "turnout-own-key"}, {"key": "sha256:" + "ab" * 32}],
        "teams": {"t": {"keys": ["team-key-xyz"]}},
        "state": {"redis_url": "redis://:redis-pass-9@cache.internal:6379/0"},
        "storage": {"single_replica": True},
    }
    raw.update(overrides)
    return TurnoutConfig.model_validate(raw)


def test_every_kind_of_configured_secret_is_found() -> None:
    found = configured_secrets(config())
    expected = {
        "plain-provider-key",
        "header-secret-value",
        "url-pass-123",
        "svc:url-pass-123",
        base64.b64encode(b"svc:url-pass-123").decode(),
        "query-secret",
        "anthropic-key-abc",
        "redis-pass-9",
        "turnout-own-key",
        "team-key-xyz",
    }
    assert expected <= found
    assert not any(s.startswith("sha256:") for s in found)


def test_configured_secrets_are_masked_in_every_spelling() -> None:
    redactor = Redactor.from_config(config())
    for text in (
        "key plain-provider-key rejected",
        'dump {"x-org":"header-secret-value"}',
        "sent turnout-own-key and team-key-xyz",
        "redis://:redis-pass-9@host",
    ):
        masked = redactor.for_log(text)
        assert MASK in masked
        for secret in ("plain-provider-key", "header-secret-value", "turnout-own-key"):
            assert secret not in masked
    odd = Redactor.of(["a/b+c d"])
    assert odd.for_log("q=a%2Fb%2Bc%20d") == f"q={MASK}"  # percent-encoded, as in a query


def test_a_value_too_short_to_be_a_secret_is_left_alone() -> None:
    redactor = Redactor.from_config(config())  # x-flag: "1"
    assert redactor.for_log("1 error in 10") == "1 error in 10"


def test_the_log_view_keeps_addresses_and_unconfigured_text() -> None:
    redactor = Redactor.from_config(config())
    text = "plain-provider-key refused by 10.0.0.5:8000"
    assert redactor.for_log(text) == f"{MASK} refused by 10.0.0.5:8000"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Incorrect API key provided: Bearer abc.def.", f"Incorrect API key provided: {MASK}."),
        ("key sk-proj-****************abcd is wrong", f"key {MASK} is wrong"),
        ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: {MASK}"),
        ('{"x-api-key": "whatever-it-is"}', f'{{"x-api-key": "{MASK}"}}'),
        ("cookie: a=b\nhost: x", f"cookie: {MASK}\nhost: x"),
        ("digest " + "0123456789abcdef" * 2, f"digest {MASK}"),
        ("token " + "AbCdEfGhIjKlMnOp1234567890qrstUV", f"token {MASK}"),
        ("id gsk_abcdefgh12345678 and hf_abcdefghijklmnop", f"id {MASK} and {MASK}"),
    ],
)
def test_token_shaped_strings_are_masked(text: str, expected: str) -> None:
    assert mask_tokens(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "This model's maximum context length is 4096 tokens. However, your messages resulted "
        "in 5000 tokens. Please reduce the length of the messages.",
        "The model `Qwen2-VL-72B-Instruct-GPTQ-Int4-preview` does not exist",
        "anthropic/claude-3-5-sonnet-20241022 is overloaded",
        "Basic authentication is not supported",
        "Rate limit reached for requests. Retry at 12:30:45.",
        "Invalid value for 'max_tokens': must be at most 4096.",
        "`messages[1].role` is not supported (role 'function'); see messages[10] and [0a]",
    ],
)
def test_ordinary_messages_survive(text: str) -> None:
    assert Redactor.from_config(config()).for_client(text, LABEL) == text


def test_long_runs_of_words_are_not_tokens() -> None:
    assert not looks_like_token("meta-llama-3-70b-instruct-awq-int4-quantized")
    assert looks_like_token("f" * 40)
    assert looks_like_token("x9" * 20)


@pytest.mark.parametrize(
    "text",
    [
        "Cannot connect to host 10.1.2.3:8000 ssl:default",
        "[Connect call failed ('10.1.2.3', 8000)]",
        "at http://user:pw@vllm-0:8000/v1/chat/completions",
        "reached vllm-0:8000",
        "reached [fd00::1]:8000",
        "reached fd00::1",
        "reached vllm-0.default.svc.cluster.local",
        "reached localhost",
    ],
)
def test_addresses_become_the_label(text: str) -> None:
    masked = mask_addresses(text, LABEL)
    assert LABEL in masked
    for gone in ("10.1.2.3", "8000", "vllm", "fd00", "localhost", "http"):
        assert gone not in masked


def test_configured_upstream_hosts_become_the_label() -> None:
    redactor = Redactor.from_config(config())
    assert redactor.for_client("no route to vllm.example", LABEL) == f"no route to {LABEL}"


def test_public_keeps_the_fields_and_the_upstreams_words_for_the_log() -> None:
    redactor = Redactor.from_config(config())
    raw = UpstreamError(
        "Incorrect API key provided: Bearer plain-provider-key (at 10.0.0.5:8000)",
        failure=Failure.STATUS,
        status=401,
        type="invalid_request_error",
        code="invalid_api_key",
        param="model",
        retry_after=2.0,
    )
    public = redactor.public(raw, LABEL)
    assert public.message == f"Incorrect API key provided: {MASK} (at {LABEL})"
    assert (public.status, public.type, public.code, public.param, public.retry_after) == (
        401,
        "invalid_request_error",
        "invalid_api_key",
        "model",
        2.0,
    )
    assert public.detail == f"Incorrect API key provided: Bearer {MASK} (at 10.0.0.5:8000)"


def test_scrub_masks_every_string_in_a_log_event() -> None:
    redactor = Redactor.from_config(config())
    event = {"attempts": [{"outcome": "x plain-provider-key"}], "n": 3, "t": ("turnout-own-key",)}
    assert redactor.scrub(event) == {"attempts": [{"outcome": f"x {MASK}"}], "n": 3, "t": [MASK]}


@pytest.mark.parametrize(
    "credential",
    [
        "Bearer abc.def",
        "BEARER x",
        "basic dXNlcjpwYXNz",
        "sk-proj-abcd",
        "pk_live_abc",
        "rk-abc",
        *(f"{p}_abcdefgh12345678" for p in ("gsk", "ghp", "gho", "ghu", "ghs", "github_pat")),
        *(f"{p}_abcdefgh12345678" for p in ("hf", "xoxa", "xoxb", "xoxp", "xoxr", "glpat", "r8")),
        "xai-abcdefgh1234",
        "AIza" + "B" * 20,
        "AKIA" + "ABCDEFGH12345678",
        "eyJabcdefgh.ijklmnop.qrst",
    ],
)
def test_every_credential_shape_gets_past_the_quick_check(credential: str) -> None:
    # mask_credentials returns early when no credential can start in the text: each
    # shape it masks must start the way that check looks for.
    assert MASK in mask_credentials(f"said ({credential}) twice")


def test_scrub_remembers_clean_strings_per_config_only() -> None:
    text = "x plain-provider-key"
    assert Redactor().scrub(text) == text  # no secrets: found clean, and remembered
    masking = Redactor.from_config(config())
    assert masking.scrub(text) == masking.scrub(text) == f"x {MASK}"
    assert masking.scrub("Bearer abcdefgh") == f"Bearer {MASK}"


SECRET = "upk-Alpha7Bravo9Charlie"


@pytest.mark.parametrize(
    "spelling",
    [
        SECRET.lower(),
        SECRET.upper(),
        SECRET.replace("-", "%2d"),
        SECRET.replace("-", "%2D"),
        SECRET.replace("-", "&#45;"),
        SECRET.replace("-", "&#x2d;"),
        SECRET.encode().hex(),
        base64.b64encode(SECRET.encode()).decode(),
        base64.b64encode(b"user:" + SECRET.encode()).decode(),  # inside a Basic credential
        base64.b64encode(b"Bearer " + SECRET.encode()).decode(),  # each of 3 alignments
        base64.urlsafe_b64encode(b"\xfb\xff" + SECRET.encode()).decode().rstrip("="),
        f"{SECRET[:6]}****{SECRET[-4:]}",  # OpenAI's partial mask
        f"****{SECRET[-6:]}",
        f"{SECRET[:9]}...{SECRET[9:]}",
        f"{SECRET[:11]}…",
    ],
)
def test_every_spelling_of_a_secret_is_masked(spelling: str) -> None:
    masked = Redactor.of([SECRET]).for_log(f"key={spelling} rejected")
    assert masked.startswith("key=")
    assert masked.endswith(" rejected")
    assert MASK in masked
    for fragment in (SECRET[:6], SECRET[-6:], spelling[-12:]):
        assert fragment.lower() not in masked.lower()


@pytest.mark.parametrize(
    "text",
    [
        "Loading... please wait **** xxxx",
        "upk-Alpha is a prefix too short to be the key",  # no mask run: not a fragment
        "base64 of something else: dXNlcjpwYXNzd29yZA==",
    ],
)
def test_text_that_only_resembles_a_secret_survives(text: str) -> None:
    assert Redactor.of([SECRET]).for_log(text) == text


def test_many_secrets_compile_into_one_pattern_that_finds_each() -> None:
    secrets = [f"secret-{i:03d}-{'k' * (i % 7)}Zz" for i in range(60)]
    redactor = Redactor.of(secrets)
    for secret in secrets:
        assert redactor.for_log(f"a {secret.upper()} b") == f"a {MASK} b"


def test_error_fields_reach_a_client_only_as_identifiers_without_secrets() -> None:
    redactor = Redactor.of([SECRET])
    raw = UpstreamError(
        "bad",
        failure=Failure.STATUS,
        status=401,
        type=f"type_{SECRET}",
        code=f"key_{SECRET.lower()}",
        param=f"p {SECRET}",
    )
    public = redactor.public(raw, LABEL)
    assert (public.type, public.code, public.param) == ("invalid_request_error", None, None)
    fine = UpstreamError(
        "x", failure=Failure.STATUS, status=400, type="t", code="c_1", param="messages[0].role"
    )
    assert (redactor.public(fine, LABEL).param) == "messages[0].role"
