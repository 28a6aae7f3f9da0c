"""One config's secrets as one compiled pattern, in every spelling an upstream may echo.

An upstream that echoes a credential seldom echoes it byte for byte: it lower-cases it
(`key.lower()` in a log helper), percent-encodes it (a query string, with `%2d` or `%2D`),
writes HTML entities (`&#45;`), JSON-escapes it, hex-dumps it, base64-encodes it (a
`Basic` header is `base64(user:password)`, a debug dump may be `base64("Bearer " + key)`),
or masks it partly in its own fashion (OpenAI's `sk-ab****wxyz`), which still gives away
a secret's start or end. `SecretPattern` matches all of these:

- text spellings, case-insensitively: as configured, JSON-escaped (short or `\\uXXXX` for
  every character), percent-encoded, HTML-escaped (named, decimal and hex entities), hex;
- base64, case-sensitively, standard and URL-safe: for each of the three byte alignments
  the characters fully determined by the secret's bytes, so the secret is found inside a
  longer base64 string whatever came before it;
- a token (a run of word characters and `-`) around a mask-like run (`**`, `…`, `...`,
  `xxxx`) that holds the first or the last `FRAGMENT_CHARS` characters of a secret.

Python's `re` tries each alternative of an alternation at every position; 50 secrets in
a dozen spellings each made that a few milliseconds per 4 KB message. The spellings are
therefore merged into a trie first, written as one regex, so at each position only the
branches that share its first character are tried (bench/redaction_bench.py). No
well-kept library builds such a regex; the builder is a dozen lines.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import quote, quote_plus

import orjson

# A configured value shorter than this is masked nowhere: it cannot be told from the
# ordinary words of a message ("1", "yes"), and is no credential worth the name.
MIN_SECRET_CHARS = 4
# A base64 run this short could be part of any blob or word; a secret of fewer than
# 6 bytes has no base64 spelling this long and is matched in its text spellings only.
MIN_BASE64_CHARS = 8
# How much of a secret's start or end, next to a mask-like run, gives it away.
FRAGMENT_CHARS = 6
# Fragments are looked for only in secrets clearly longer than one: 6 characters of an
# 8-character secret are most of it, but "applic" of a header value "application/json"
# would mask every `application****`.
MIN_FRAGMENTED_CHARS = 10

# Found by a class first (`re` then skips ahead fast), checked by the exact rule after.
_MASK_CHARS = re.compile(r"[*…•.xX]{2,}|…")
_MASK_RUN = re.compile(r"\*{2,}|…+|\.{3,}|x{4,}|X{4,}|•{2,}")
# The token around a mask-like run: word characters and `-` before it (at most
# MAX_TOKEN of them), and those, more mask characters and dots after it.
MAX_TOKEN = 128
_TOKEN_AFTER = re.compile(r"[\w\-*…•.]+")
_BASE64_TAIL = r"[A-Za-z0-9+/_\-]{0,2}={0,2}"
_TOKEN_PART = re.compile(r"[\w\-]+")
# A trie of words: character -> subtrie; the key "" marks the end of a word.
_Trie: TypeAlias = dict[str, "_Trie"]


def text_spellings(secret: str) -> set[str]:
    """The spellings of `secret` matched case-insensitively (so lower- and upper-case
    percent escapes, hex digits and entities are one spelling each)."""
    data = secret.encode()
    found = {
        secret,
        orjson.dumps(secret).decode()[1:-1],
        "".join(f"\\u{ord(c):04x}" for c in secret),
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        "".join(c if c.isalnum() else "".join(f"%{b:02x}" for b in c.encode()) for c in secret),
        html.escape(secret),
        _entities(secret, "&#{};", ord),
        _entities(secret, "&#x{:x};", ord),
        data.hex(),
    }
    return {s.lower() for s in found if len(s) >= MIN_SECRET_CHARS}


def _entities(secret: str, form: str, code: Callable[[str], int]) -> str:
    # Upstreams escape punctuation, not letters and digits.
    return "".join(c if c.isalnum() else form.format(code(c)) for c in secret)


def base64_spellings(secret: str) -> set[str]:
    """The base64 characters fully determined by `secret`'s bytes at each of the three
    alignments a longer encoded string may put it at, in both alphabets."""
    data = secret.encode()
    found = set()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + data).decode()
        # Character i carries bits [6i, 6i + 6) of the input: keep those within the secret.
        first = -(-8 * offset // 6)
        last = 8 * (offset + len(data)) // 6
        core = encoded[first:last]
        if len(core) >= MIN_BASE64_CHARS:
            found.update({core, core.replace("+", "-").replace("/", "_")})
    return found


def trie_regex(words: Iterable[str], *, any_case: bool = False) -> str:
    """A regex matching exactly `words`, longest first, with shared prefixes merged.
    `any_case`: letters match in either case (the words must be lower-case). Written as
    `[aA]` rather than under `(?i)`: `re` skips a branch whose first character cannot
    match only for plain literals and classes, and that made it six times faster."""
    root: _Trie = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}
    return _node_regex(root, _either_case if any_case else re.escape)


def _either_case(char: str) -> str:
    upper = char.upper()
    return f"[{char}{upper}]" if upper != char and len(upper) == 1 else re.escape(char)


def _node_regex(node: _Trie, spell: Callable[[str], str]) -> str:
    chain = ""
    # A chain of single children is one literal: the recursion then only goes as deep as
    # the trie branches, not as long as the longest word.
    while len(node) == 1 and "" not in node:
        char, node = next(iter(node.items()))
        chain += spell(char)
    branches = [spell(char) + _node_regex(child, spell) for char, child in node.items() if char]
    if not branches:
        return chain
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    # Greedy `?`: the longer word is tried first, so a secret containing another is masked whole.
    return chain + (f"(?:{body})?" if "" in node else body)


@dataclass(frozen=True, slots=True)
class SecretPattern:
    """Finds a config's secrets in text; built once per config, immutable."""

    lowered: re.Pattern[str]  # the text spellings, lower-case: run on the lower-cased text
    any_case: re.Pattern[str]  # the same, for text whose length lower-casing changes
    encoded: re.Pattern[str] | None  # the base64 spellings, case-sensitive
    starts: frozenset[str]  # the secrets' first FRAGMENT_CHARS characters, lower-cased
    ends: frozenset[str]  # and their last ones

    @classmethod
    def of(cls, secrets: Iterable[str]) -> SecretPattern | None:
        kept = {s for s in secrets if len(s) >= MIN_SECRET_CHARS}
        if not kept:
            return None
        text = sorted({t for s in kept for t in text_spellings(s)})
        encoded = sorted({b for s in kept for b in base64_spellings(s)})
        long_ones = [s.lower() for s in kept if len(s) >= MIN_FRAGMENTED_CHARS]
        return cls(
            re.compile(trie_regex(text)),
            re.compile(trie_regex(text, any_case=True)),
            re.compile(f"(?:{trie_regex(encoded)}){_BASE64_TAIL}") if encoded else None,
            frozenset(s[:FRAGMENT_CHARS] for s in long_ones),
            frozenset(s[-FRAGMENT_CHARS:] for s in long_ones),
        )

    def sub(self, replacement: str, text: str) -> str:
        """`text` with every secret, in every spelling, replaced by `replacement`."""
        text = self._sub_whole(replacement, text)
        if not self.starts:
            return text
        return self._sub_fragments(replacement, text)

    def _sub_whole(self, replacement: str, text: str) -> str:
        # Matching the lower-cased text against lower-case literals is four times faster
        # than matching `[aA]` classes; its offsets are the text's when the length holds.
        lowered = text.lower()
        if len(lowered) == len(text):
            spans = [m.span() for m in self.lowered.finditer(lowered)]
        else:
            spans = [m.span() for m in self.any_case.finditer(text)]
        if self.encoded is not None:
            spans += [m.span() for m in self.encoded.finditer(text)]
        if not spans:
            return text
        pieces, done = [], 0
        for start, end in sorted(spans):
            if end <= done:
                continue
            if start > done:
                pieces.append(text[done:start])
            pieces.append(replacement)
            done = end
        return "".join([*pieces, text[done:]])

    def _sub_fragments(self, replacement: str, text: str) -> str:
        """`text` with each token around a mask-like run that holds a secret's start or
        end replaced. The runs are found first (rare, and found fast: the pattern starts
        with a character class), the tokens around them only then."""
        pieces, done = [], 0
        for run in _MASK_CHARS.finditer(text):
            if run.start() < done or not _MASK_RUN.search(run.group(0)):
                continue
            start, floor = run.start(), max(done, run.start() - MAX_TOKEN)
            while start > floor and (text[start - 1].isalnum() or text[start - 1] in "_-"):
                start -= 1  # a few characters back: cheaper than a regex searching the window
            after = _TOKEN_AFTER.match(text, run.end())
            end = after.end() if after else run.end()
            if self._is_fragment(text[start:end]):
                pieces += [text[done:start], replacement]
                done = end
        return "".join([*pieces, text[done:]]) if pieces else text

    def _is_fragment(self, token: str) -> bool:
        """Whether a token with a mask-like run holds a secret's start or end."""
        for part in _TOKEN_PART.findall(token.lower()):
            windows = {part[i : i + FRAGMENT_CHARS] for i in range(len(part) - FRAGMENT_CHARS + 1)}
            if windows & self.starts or windows & self.ends:
                return True
        return False
