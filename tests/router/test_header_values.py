"""Header values built from names a client chose, as a pure function."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from router.header_values import MAX_NAME_CHARS, MAX_NAMES, header_list

# RFC 9110 token characters, and the ", " that separates list items.
SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~, ")


@pytest.mark.parametrize(
    "name", ["ключ", "a\r\nb", "x: y", "100%", "tab\there", "\u2028", "\ud800", "a,b", "é"]
)
def test_every_name_becomes_token_characters_and_decodes_back(name: str) -> None:
    value = header_list([name])
    assert set(value) <= SAFE
    assert "," not in value
    value.encode("latin-1")  # what an ASGI server does with it; must not raise
    if name != "\ud800":  # a lone surrogate is kept as its escape
        assert unquote(value) == name


def test_option_names_are_unchanged() -> None:
    names = ["n", "best_of", "stream_options.include_usage"]
    assert header_list(names) == "n, best_of, stream_options.include_usage"


def test_long_names_and_long_lists_are_bounded() -> None:
    value = header_list(["k" * 10_000])
    assert value == "k" * MAX_NAME_CHARS + "..."
    many = header_list([f"f{i}" for i in range(MAX_NAMES + 5)])
    assert many.endswith(", f15, +5 more")
    assert len(header_list(["ж" * 10_000] * 1000)) < 16 * 1024
