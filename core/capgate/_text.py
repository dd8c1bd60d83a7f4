"""The lexical rules shared by caveats, grants and requests: ids, names, safe text.

Everything a policy compares is checked here once, so "unicode tricks" (control
and format characters, odd spaces, non-NFC forms) are refused in one place.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["ACTION_RE", "CTX_KEY_RE", "ID_RE", "safe_text_problem"]

# Agent/principal ids and action names: ASCII, 1–64 characters.
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ACTION_RE = ID_RE
CTX_KEY_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")


def safe_text_problem(text: str) -> str | None:
    """Why ``text`` may not appear in a policy value, or None when it may.

    Printable ASCII except space passes at once; anything else must be NFC and
    free of control, format, private-use, unassigned and separator characters.
    """
    if text.isascii():
        if text.isprintable() and " " not in text:
            return None
        return "contains a space or a control character"
    if not unicodedata.is_normalized("NFC", text):
        return "is not in Unicode NFC form"
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] in "CZ":
            return f"contains the character U+{ord(ch):04X} ({cat})"
    return None
