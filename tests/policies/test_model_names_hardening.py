"""Review R3: the names `ModelNames` remembers are bounded in size, not only in number.
Model names are the client's: 4096 remembered names of `max_body_bytes` each would hold
gigabytes for as long as the config is loaded."""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.model_names import ModelNames, Resolved


@dataclass(frozen=True)
class Entry:
    aliases: list[str] = field(default_factory=list)
    match: list[str] = field(default_factory=list)


def test_a_long_name_is_resolved_but_not_remembered() -> None:
    names = ModelNames({"opus": Entry(match=["claude-*opus*"])})
    long_name = "claude-opus-" + "x" * 100_000

    assert names.resolve(long_name) == Resolved("opus", "match:claude-*opus*")
    assert names.resolve("claude-nothing-" + "y" * 100_000) is None
    assert names.resolve("claude-opus-4-8") == Resolved("opus", "match:claude-*opus*")
    # What is remembered (private: there is no other way to see it) holds short names only.
    remembered = names._matched
    assert list(remembered) == ["claude-opus-4-8"]
