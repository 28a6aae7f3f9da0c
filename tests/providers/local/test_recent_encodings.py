"""`RecentEncodings`: a text encoded lately is not encoded again; the entries and the
length of a text kept are bounded; callers get their own lists."""

from __future__ import annotations

from providers.local.recent_encodings import RecentEncodings


class Counting:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, text: str) -> list[int]:
        self.calls.append(text)
        return [ord(c) for c in text]


def test_a_text_is_encoded_once_while_it_is_held() -> None:
    recent, encode = RecentEncodings(entries=2), Counting()
    first = recent.encode("abc", encode)
    first.append(0)  # the caller's own list: what is held is untouched
    assert recent.encode("abc", encode) == [97, 98, 99]
    assert encode.calls == ["abc"]
    assert recent.hits == 1


def test_the_least_recently_used_text_goes_first() -> None:
    recent, encode = RecentEncodings(entries=2), Counting()
    for text in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" comes
        recent.encode(text, encode)
    assert len(recent) == 2
    recent.encode("a", encode)
    recent.encode("b", encode)
    assert encode.calls == ["a", "b", "c", "b"]


def test_texts_longer_than_the_bound_are_not_kept() -> None:
    recent, encode = RecentEncodings(entries=2, longest=3), Counting()
    recent.encode("abcd", encode)
    recent.encode("abcd", encode)
    assert encode.calls == ["abcd", "abcd"]
    assert len(recent) == 0
