"""Whole numbers read from folder names and CSV cells: ASCII digits only, everywhere.

`str.isdigit()` accepts '²' (then `int('²5')` fails) and `int()` reads Arabic-Indic '٤٥' as 45, so a name that looks
odd would either crash or be read as something nobody wrote. The pattern accepts exactly `[0-9]+`.

    whole_number("45") -> 45;  whole_number("²5"), whole_number("4x"), whole_number("-3") -> None
"""
from __future__ import annotations

import re

WHOLE = re.compile(r"[0-9]+")


def whole_number(text: str) -> int | None:
    """A non-negative whole number written in ASCII digits, or None."""
    return int(text) if isinstance(text, str) and WHOLE.fullmatch(text) else None
