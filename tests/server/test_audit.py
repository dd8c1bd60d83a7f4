"""The verify tally: identical allows and denies fold, the tally and the records are
bounded, failed flushes retry, old records are deleted."""

from __future__ import annotations

import asyncio

from capgate import Decision, DenyCode
from capgate_server import AuditLog


def test_tally_folds_allows_and_denies_and_retries():
    written: list = []
    fail = [True]

    async def write(events):
        if fail[0]:
            fail[0] = False
            raise OSError("store down")
        written.extend(events)

    async def go():
        log = AuditLog(write)
        allow = Decision(True, DenyCode.ALLOWED, "allowed", None, "t" * 32, ("a",))
        for i in range(5):
            log.decision("svc", allow, "read", "/x", "a", 100.0 + i)
        log.decision("svc", allow, "read", "/y", "a", 106.0)
        for _ in range(2):  # two identical denies (two objects) are one record
            log.decision("svc", Decision(False, DenyCode.REVOKED, "token t is revoked", None,
                                         "t" * 32, ("a",)), "read", "/x", "a", 107.0)
        await log.flush()  # fails: kept for the next attempt
        assert written == []
        await log.flush()
        return log

    log = asyncio.run(go())
    assert log.decisions == 8
    by = {(e.resource, e.ok): e for e in written}
    folded = by[("/x", True)]
    assert (folded.count, folded.at, folded.last_at) == (5, 100.0, 104.0)
    assert by[("/y", True)].count == 1
    denies = [e for e in written if not e.ok]
    assert len(denies) == 1 and denies[0].reason == "token t is revoked"
    assert denies[0].count == 2
    assert all(e.kind == "verify" and e.chain == ("a",) for e in written)
