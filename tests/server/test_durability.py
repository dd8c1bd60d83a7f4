"""Nothing acknowledged is lost: kill -9, SIGTERM under load, a full disk; each followed
by a restart on the same data directory."""

from __future__ import annotations

import secrets
import signal
import threading

from capgate import CapgateError

from harness import ServerProcess, wait_for


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


def test_sigterm_under_load_finishes_or_refuses_every_call_never_cancels(tmp_path):
    """Every call either completes, or is refused as UNAVAILABLE and was not executed:
    none comes back CANCELLED while the grace lasts, so a client knows whether its
    revoke ran."""
    data = tmp_path / "data"
    p = ServerProcess(data, ["--shutdown-grace", "5"]).start()
    outcomes: list[tuple[str, str, str]] = []  # (kind, status, details) per call
    revoked: dict[str, str] = {}  # id -> status of its revoke
    stop = threading.Event()
    try:
        with p.client() as admin:
            _, cred = admin.create_agent("bob", ["read:/x/**"])
            with p.client(cred) as bob:
                token = bob.issue("read:/x/**").token
        batch = [(token, "read", f"/x/{i}", "bob", None) for i in range(256)]

        def load(kind: str) -> None:
            with p.client(timeout=20) as c:
                while not stop.is_set():
                    target = secrets.token_hex(16)
                    try:
                        if kind == "revoke":
                            c.revoke(target, "load")
                        else:
                            c.verify_batch(batch)
                        status, details = "OK", ""
                    except CapgateError as e:
                        status, details = str(e.context.get("status")), e.message
                    outcomes.append((kind, status, details))
                    if kind == "revoke":
                        revoked[target] = status
                    if status != "OK":
                        return  # a real client would fail over to another replica

        workers = [threading.Thread(target=load, args=(kind,))
                   for kind in ["revoke"] * 8 + ["verify"] * 4]
        for w in workers:
            w.start()
        wait_for(lambda: sum(s == "OK" for s in revoked.values()) >= 50, timeout=30)
        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(15) == 0
        stop.set()
        for w in workers:
            w.join(30)
    finally:
        stop.set()
        p.stop()

    statuses = {s for _, s, _ in outcomes}
    assert statuses <= {"OK", "UNAVAILABLE"}, [o for o in outcomes if o[1] != "OK"][:5]
    refused = [d for _, s, d in outcomes if s == "UNAVAILABLE"]
    assert refused and all("not executed" in d or "connect" in d for d in refused), refused
    # what was acknowledged ran; what was refused did not
    q = ServerProcess(data).start()
    try:
        with q.client() as admin:
            for target, status in revoked.items():
                assert admin.revoke(target).newly_revoked == (status != "OK"), (target, status)
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
