"""Audit records as the store keeps them: ``AuditEvent``, bounded to
``AUDIT_FIELD_LIMITS``, and ``AuditQuery``, which of them to read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

__all__ = ["AUDIT_FIELD_LIMITS", "AuditEvent", "AuditQuery"]


# The most characters stored per audit field: anything longer is cut, and the
# original length kept in ``detail["truncated"]`` (a record's size is bounded).
# Valid actions, presenters and resources always fit; only bad requests are cut.
AUDIT_FIELD_LIMITS: dict[str, int] = {
    "principal": 64,
    "subject": 128,
    "code": 64,
    "reason": 512,
    "action": 64,
    "resource": 1024,
    "presenter": 64,
    "detail": 4096,
    "caveat": 512,
    "replica": 64,
}
_CTX_KEYS = 32  # context keys a record names (each at most 64 characters)


@dataclass(slots=True)
class AuditEvent:
    at: float
    principal: str
    kind: str  # issue, verify, revoke, delegate, agent.create, …
    subject: str = ""
    ok: bool = True
    code: str = ""
    reason: str = ""
    chain: tuple[str, ...] = ()
    detail: dict[str, object] = field(default_factory=dict)
    seq: int = 0
    # verify decisions: the request, and how many identical ones up to last_at
    action: str = ""
    resource: str = ""
    presenter: str = ""
    count: int = 1
    last_at: float | None = None
    caveat: str = ""  # a deny: the caveat that failed
    ctx_keys: tuple[str, ...] = ()  # the request context's keys (never its values)
    replica: str = ""  # the replica that wrote it
    # in the sealed ledger: its place and its digest (0 and b"" until sealed)
    pos: int = 0
    digest: bytes = b""

    def detail_json(self) -> str:
        return json.dumps(self.detail, sort_keys=True, separators=(",", ":")) if self.detail else ""

    def bounded(self) -> AuditEvent:
        """This record as it is stored: every text field within ``AUDIT_FIELD_LIMITS``."""
        cut: dict[str, int] = {}
        values: dict[str, str] = {}
        for name in (
            "principal",
            "subject",
            "code",
            "reason",
            "action",
            "resource",
            "presenter",
            "caveat",
            "replica",
        ):
            value: str = getattr(self, name)
            limit = AUDIT_FIELD_LIMITS[name]
            if len(value) > limit:
                cut[name] = len(value)
                values[name] = value[:limit]
        chain = self.chain
        if len(chain) > 32 or any(len(a) > 64 for a in chain):
            cut["chain"] = len(chain)
            chain = tuple(a[:64] for a in chain[:32])
        ctx_keys = self.ctx_keys
        if len(ctx_keys) > _CTX_KEYS or any(len(k) > 64 for k in ctx_keys):
            cut["ctx_keys"] = len(ctx_keys)
            ctx_keys = tuple(k[:64] for k in ctx_keys[:_CTX_KEYS])
        detail = self.detail
        size = len(self.detail_json())
        if size > AUDIT_FIELD_LIMITS["detail"]:
            detail = {"truncated_json": self.detail_json()[:1024]}
            cut["detail"] = size
        if not cut:
            return self
        return AuditEvent(
            self.at,
            values.get("principal", self.principal),
            self.kind,
            values.get("subject", self.subject),
            self.ok,
            values.get("code", self.code),
            values.get("reason", self.reason),
            chain,
            {**detail, "truncated": cut},
            self.seq,
            values.get("action", self.action),
            values.get("resource", self.resource),
            values.get("presenter", self.presenter),
            self.count,
            self.last_at,
            values.get("caveat", self.caveat),
            ctx_keys,
            values.get("replica", self.replica),
        )


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Which records: by who acted, an agent of the chain, kind, token, outcome, code."""

    principal: str = ""
    agent: str = ""
    kind: str = ""
    token_id: str = ""
    after_seq: int = 0  # newest_first: records before it (0: from the newest)
    limit: int = 100
    code: str = ""
    ok: bool | None = None  # True: allowed / done; False: denied / refused
    newest_first: bool = False
    since: float = 0.0  # only records last seen at or after this instant
