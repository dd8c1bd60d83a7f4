"""Nothing acknowledged is lost: kill -9, SIGTERM, a full disk; each followed by a
restart on the same data directory."""

from __future__ import annotations

import secrets

from capgate import CapgateError

from harness import ServerProcess


def test_revocation_agent_and_keys_survive_kill_9(tmp_path):
    data = tmp_path / "data"
    p = ServerProcess(data).start()
    try:
        admin = p.client()
        _, cred = admin.create_agent("alice", ["read:/data/**"])
        alice = p.client(cred)
        kept = alice.issue("read:/data/**").token
        doomed = alice.issue("read:/data/**")
        svc_cred = admin.create_principal("svc", "service").credential
        assert admin.revoke(doomed.token_id, "test").newly_revoked
        for c in (admin, alice):
            c.close()
        admin_cred = p.admin_credential
        p.kill()  # SIGKILL right after the revoke was acknowledged
    finally:
        p.stop()

    q = ServerProcess(data).start()
    try:
        assert q.admin_credential == admin_cred  # not regenerated
        with q.client(svc_cred) as svc, q.client() as admin, q.client(cred) as alice:
            d = svc.verify(doomed.token, "read", "/data/x", presenter="alice")
            assert not d.allowed and d.code == "revoked"
            # the agent and the key ring are intact: a token from before the crash verifies
            assert svc.verify(kept, "read", "/data/x", presenter="alice").allowed
            assert admin.get_agent("alice").ceiling == ("read:/data/**",)
            assert svc.verify(
                alice.issue("read:/data/y").token, "read", "/data/y", presenter="alice"
            ).allowed
            kinds = {e.kind for e in admin.audit(token_id=doomed.token_id)}
            assert {"issue", "revoke"} <= kinds
    finally:
        q.stop()


def test_sigterm_shuts_down_gracefully_and_flushes_the_audit(tmp_path):
    data = tmp_path / "data"
    p = ServerProcess(data).start()
    try:
        with p.client() as admin:
            _, cred = admin.create_agent("bob", ["read:/x/**"])
            with p.client(cred) as bob:
                t = bob.issue("read:/x/*")
                for i in range(5):
                    assert admin.verify(t.token, "read", f"/x/{i}", presenter="bob").allowed
        assert p.terminate() == 0
    finally:
        p.stop()
    q = ServerProcess(data).start()
    try:
        with q.client() as admin:
            verifies = admin.audit(token_id=t.token_id, kind="verify")
            assert len(verifies) == 5 and all(e.ok for e in verifies)
    finally:
        q.stop()


def test_a_revoke_on_a_full_disk_is_unavailable_with_the_reason_and_not_acknowledged(tmp_path):
    data = tmp_path / "data"
    p = ServerProcess(data).start()
    try:
        admin_cred = p.admin_credential
    finally:
        assert p.terminate() == 0
    room = max(f.stat().st_size for f in data.iterdir()) + 64 * 1024
    p = ServerProcess(data, file_size_limit=room).start()  # the disk fills up soon
    acknowledged, refused = [], None
    try:
        with p.client(admin_cred) as admin:
            for _ in range(500):
                target = secrets.token_hex(16)
                try:
                    admin.revoke(target, "x" * 500)
                except CapgateError as e:
                    refused = (target, e)
                    break
                acknowledged.append(target)
            assert refused is not None, "the disk never filled up"
            target, error = refused
            assert error.context.get("status") == "UNAVAILABLE", error
            # ENOSPC reads "database or disk is full"; the file-size limit, EFBIG, this:
            assert "disk I/O error (SQLITE_IOERR_WRITE)" in error.message
            assert [e.subject for e in admin.audit(kind="revoke")] == acknowledged[:100]
    finally:
        p.stop()
    q = ServerProcess(data).start()  # room again: nothing acknowledged was lost
    try:
        with q.client(admin_cred) as admin:
            assert all(not admin.revoke(t).newly_revoked for t in acknowledged)
            assert admin.revoke(target).newly_revoked  # the refused one never happened
    finally:
        q.stop()
