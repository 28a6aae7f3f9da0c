"""Numbers as the status page writes them, the same on the server and in its script
(static/status.js has the twins of these): Python's formatting rounds halves to even and
writes big numbers with an exponent, JavaScript's `toFixed` and `String` do neither, so a
refresh would otherwise change figures that did not change."""

from __future__ import annotations

import math


def fixed(value: float, digits: int) -> str:
    """`value` to `digits` decimals, halves rounded up: as the script's `fixed` does (Python's
    formatting rounds halves to even, JavaScript's `toFixed` does not)."""
    scale = 10**digits
    return f"{math.floor(value * scale + 0.5) / scale:.{digits}f}"


def attr_number(value: float) -> str:
    """A number for an attribute, six significant digits, never an exponent: as the
    script's `g` writes it."""
    short = float(f"{value:.6g}")
    return str(int(short)) if short.is_integer() else repr(short)
