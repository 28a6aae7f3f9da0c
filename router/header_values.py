"""Response header values that carry names a client chose.

`x-turnout-dropped` (and its siblings) list request fields, and a request's unknown fields
are named by the client: a key like `"ключ"` or one holding CR/LF cannot go into an HTTP
header as it is (the ASGI server fails the response, or drops the connection, after the
upstream was called and billed). Each name is therefore percent-encoded down to RFC 9110
token characters (`%` itself included, so the encoding is unambiguous and reversible with
`urllib.parse.unquote`), cut to a bounded length, and the list to a bounded count, the rest
counted (`+3 more`). The encoding cannot fail, so nothing about a header is left to go wrong
once a backend has been called.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

# RFC 9110 `tchar` besides letters and digits, which `quote` always keeps; `%` is escaped.
_TOKEN_PUNCTUATION = "!#$&'*+-.^_`|~"
MAX_NAMES = 16  # names listed; the rest are counted
MAX_NAME_CHARS = 64  # of a name before encoding; a longer one is cut and ends with "..."


def header_list(names: Sequence[str]) -> str:
    """`names` as one comma-separated, header-safe value."""
    shown = [_token(name) for name in names[:MAX_NAMES]]
    if len(names) > MAX_NAMES:
        shown.append(f"+{len(names) - MAX_NAMES} more")
    return ", ".join(shown)


def _token(name: str) -> str:
    cut = name if len(name) <= MAX_NAME_CHARS else name[:MAX_NAME_CHARS]
    encoded = quote(cut, safe=_TOKEN_PUNCTUATION, errors="backslashreplace")
    return encoded if cut is name else f"{encoded}..."
