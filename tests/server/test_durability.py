"""Nothing acknowledged is lost: kill -9 and restart on the same data directory."""

from __future__ import annotations

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
            assert svc.verify(alice.issue("read:/data/y").token, "read", "/data/y",
                              presenter="alice").allowed
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
