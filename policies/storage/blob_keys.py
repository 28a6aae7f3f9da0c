"""What a blob key may be, checked by every `BlobStore` before the key names a path.

Keys are Turnout's own ids ("file-..."), but a key becomes a file name (`LocalBlobs`) or an
object name (`S3Blobs`), so each store checks it rather than trust its caller: a key can
never hold a path separator, be "." or "..", or start with the "." of `LocalBlobs`'
temporary files.
"""

from __future__ import annotations

import re

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def checked_key(key: str) -> str:
    """`key` itself, or `ValueError` when it could name anything but one plain file."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a valid blob key: {key[:64]!r}")
    return key


def checked_range(start: int, end: int | None) -> None:
    """`ValueError` for a range no store can serve."""
    if start < 0 or (end is not None and end < 0):
        raise ValueError(f"invalid byte range [{start}, {end})")
