"""Console sessions: who is logged in, for how long, and the CSRF token of each.

A session is created by logging in with a principal credential; the browser
holds only its random id, in an HttpOnly, SameSite=Strict cookie. The session
keeps the credential's hash (never the credential), so every request finds the
principal again in the store: a credential disabled or rotated since the login
ends the session at once, as it ends the principal's gRPC calls.

A session ends after ``IDLE`` without a request, ``LIFETIME`` after the login,
or at logout. Sessions live in this replica's memory: a restart logs everyone
out, and a console behind a load balancer needs sticky sessions.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["IDLE", "LIFETIME", "MAX_SESSIONS", "Session", "Sessions"]

IDLE = 15 * 60.0
LIFETIME = 8 * 3600.0
MAX_SESSIONS = 256  # beyond it, the least recently used session is ended


@dataclass
class Session:
    id: str
    csrf: str
    principal: str
    credential_hash: str
    created: float
    seen: float

    def csrf_matches(self, token: str) -> bool:
        return hmac.compare_digest(self.csrf.encode(), token.encode("utf-8", "replace"))


class Sessions:
    def __init__(
        self,
        clock: Callable[[], float],
        *,
        idle: float = IDLE,
        lifetime: float = LIFETIME,
        limit: int = MAX_SESSIONS,
    ) -> None:
        self._clock = clock
        self._idle = idle
        self.lifetime = lifetime
        self._limit = limit
        self._by_id: dict[str, Session] = {}

    def create(self, principal: str, credential_hash: str) -> Session:
        now = self._clock()
        self._expire(now)
        while len(self._by_id) >= self._limit:
            oldest = min(self._by_id.values(), key=lambda s: s.seen)
            del self._by_id[oldest.id]
        session = Session(
            secrets.token_urlsafe(32),
            secrets.token_urlsafe(32),
            principal,
            credential_hash,
            now,
            now,
        )
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session with this id (its idle timer restarted), or None."""
        session = self._by_id.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if not self._alive(session, now):
            del self._by_id[session_id]
            return None
        session.seen = now
        return session

    def alive(self, session_id: str) -> bool:
        """Whether the session still holds, without counting this as activity."""
        session = self._by_id.get(session_id)
        return session is not None and self._alive(session, self._clock())

    def end(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._by_id)

    def _alive(self, s: Session, now: float) -> bool:
        return now - s.seen < self._idle and now - s.created < self.lifetime

    def _expire(self, now: float) -> None:
        for sid in [sid for sid, s in self._by_id.items() if not self._alive(s, now)]:
            del self._by_id[sid]
