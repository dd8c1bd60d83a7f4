"""Time: the injectable clock, RFC 3339 instants and human durations."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

from capgate._errors import InvalidArgumentError

__all__ = ["Clock", "format_duration", "format_timestamp", "parse_duration", "parse_timestamp"]

# Returns Unix seconds. Every component takes one, so tests never sleep.
Clock = Callable[[], float]
system_clock: Clock = time.time

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})"
)
_SECONDS = re.compile(r"[0-9]{1,9}")
_DURATION = re.compile(r"(?:(\d{1,6})d)?(?:(\d{1,6})h)?(?:(\d{1,6})m)?(?:(\d{1,9})s)?")


_SIMPLE_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def parse_timestamp(text: str) -> float:
    """Strict RFC 3339 (``2026-11-29T10:00:00Z``, offsets allowed) → Unix seconds."""
    if _SIMPLE_UTC.fullmatch(text) is not None:  # the form capgate writes; C-fast
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            raise InvalidArgumentError(f"{text!r} is not a valid instant") from None
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise InvalidArgumentError(f"{text!r} is not an RFC 3339 timestamp")
    tz = m.group(8)
    iso = text[: m.start(7) if m.group(7) else m.start(8)] + ("+00:00" if tz == "Z" else tz)
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError:
        raise InvalidArgumentError(f"{text!r} is not a valid instant") from None
    frac = float(m.group(7)) if m.group(7) else 0.0
    return _in_range(text, dt.timestamp() + frac)


# Instants must name a UTC time in years 1-9999, so every one can be written back.
_FIRST = datetime(1, 1, 1, tzinfo=UTC).timestamp()
_LAST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def _in_range(text: str, ts: float) -> float:
    if not _FIRST <= ts < _LAST + 1:
        raise InvalidArgumentError(f"{text!r} is outside years 1-9999 in UTC")
    return ts


def format_timestamp(ts: float) -> str:
    """Unix seconds → ``YYYY-MM-DDTHH:MM:SSZ`` (whole seconds, UTC)."""
    try:
        return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):  # beyond what datetime can write
        return f"@{ts:.0f} (Unix seconds)"


def parse_duration(text: str) -> int:
    """``90s``, ``15m``, ``1h30m``, ``7d`` (or a bare number of seconds) → seconds."""
    if isinstance(text, str) and _SECONDS.fullmatch(text) is not None:
        return int(text)
    m = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if m is None or not text or not any(m.groups()):
        raise InvalidArgumentError(f"{text!r} is not a duration (e.g. 90s, 15m, 1h, 7d)")
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def format_duration(seconds: int) -> str:
    """Seconds → the shortest ``1d2h3m4s`` form."""
    if seconds <= 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
