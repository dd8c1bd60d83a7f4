"""A flood of denies takes neither the replica nor the audit trail down: services
hammering a revoked token get their denies, identical denies become one record per
flush, and meanwhile revocations apply, valid tokens verify and the replica stays
fresh."""

from __future__ import annotations

import asyncio
import threading

import grpc

from capgate_proto.v1 import verifier_pb2
from capgate_server.store import AuditQuery

from harness import ServerThread, wait_for
from hostile import batch_of

BATCH_METHOD = "/capgate.v1.VerifierService/VerifyBatch"


def test_a_deny_flood_leaves_the_replica_serving_and_the_audit_small(tmp_path):
    s = ServerThread(tmp_path / "data", stale_after=2.0, poll_interval=0.2).start()
    try:
        with s.client() as admin:
            _, cred = admin.create_agent("alice", ["read:/data/**"])
            svc = admin.create_principal("svc", "service").credential
            with s.client(cred) as alice:
                revoked, good, later = (alice.issue("read:/data/**") for _ in range(3))
            admin.revoke(revoked.token_id)
        replica = s.app.replica
        samples: list[bool] = []
        stop = threading.Event()
        sent = [0] * 3

        async def watch():
            while not stop.is_set():
                samples.append(replica.fresh())
                await asyncio.sleep(0.01)

        watcher = asyncio.run_coroutine_threadsafe(watch(), s.loop)
        request = batch_of([revoked.token] * 256, "alice")

        def flood(k):
            with grpc.insecure_channel(s.address) as ch:
                call = ch.unary_unary(
                    BATCH_METHOD,
                    request_serializer=verifier_pb2.VerifyBatchRequest.SerializeToString,
                    response_deserializer=verifier_pb2.VerifyBatchResponse.FromString,
                )
                while not stop.is_set():
                    reply = call(request, metadata=(("authorization", f"Bearer {svc}"),))
                    assert all(r.code == "revoked" for r in reply.responses)
                    sent[k] += len(reply.responses)

        threads = [threading.Thread(target=flood, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        wait_for(lambda: sum(sent) > 100_000, timeout=120)
        with s.client() as admin, s.client(svc) as service:  # mid-flood
            assert admin.revoke(later.token_id).newly_revoked
            assert service.verify(good.token, "read", "/data/x", presenter="alice").allowed
            assert (
                service.verify(later.token, "read", "/data/x", presenter="alice").code == "revoked"
            )
        wait_for(lambda: sum(sent) > 250_000, timeout=120)
        stop.set()
        for t in threads:
            t.join(30)
        watcher.result(10)
        assert samples and all(samples)  # fresh, so SERVING, all along
        s.run(replica.audit.flush())
        rows = replica.store.list_audit(
            AuditQuery(kind="verify", token_id=revoked.token_id, limit=1000)
        )
        assert sum(r.count for r in rows) == sum(sent)  # every deny is counted ...
        assert len(rows) < sum(sent) // 256  # ... in fewer rows than there were batches
        assert all(r.code == "revoked" and r.principal == "svc" for r in rows)
    finally:
        s.stop()
