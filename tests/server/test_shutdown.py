"""Stopping drains: health says NOT_SERVING first, the calls already running finish, and
every other call is refused as UNAVAILABLE, not executed; none is CANCELLED in the grace."""

from __future__ import annotations

import queue
import secrets
import signal
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from capgate import CapgateError
from capgate_proto.v1 import verifier_pb2, verifier_pb2_grpc

from harness import ServerProcess, ServerThread, wait_for


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

        workers = [
            threading.Thread(target=load, args=(kind,)) for kind in ["revoke"] * 8 + ["verify"] * 4
        ]
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


def test_an_idle_stream_ends_at_once_as_not_executed(tmp_path):
    s = ServerThread(tmp_path / "d").start()
    with s.client() as admin:
        _, cred = admin.create_agent("bob", ["read:/x/**"])
        svc = admin.create_principal("svc", "service").credential
    with s.client(cred) as bob:
        token = bob.issue("read:/x/**").token
    requests: queue.Queue[object] = queue.Queue()
    requests.put(
        verifier_pb2.VerifyRequest(token=token, action="read", resource="/x/1", presenter="bob")
    )
    channel = grpc.insecure_channel(s.address)
    stream = verifier_pb2_grpc.VerifierServiceStub(channel).VerifyStream(
        iter(requests.get, None), metadata=(("authorization", f"Bearer {svc}"),)
    )
    try:
        assert next(stream).allowed  # then the stream waits for its next request
        started = time.monotonic()
        stopping = threading.Thread(target=lambda: s.run(s.app.stop(grace=10)))
        stopping.start()
        try:
            next(stream)
            raise AssertionError("the stream went on")
        except grpc.RpcError as e:
            assert e.code() is grpc.StatusCode.UNAVAILABLE and "not executed" in e.details()
        stopping.join(10)
        assert time.monotonic() - started < 2  # not the whole grace
    finally:
        requests.put(None)
        channel.close()
        s.stop()


def test_health_turns_not_serving_before_calls_are_refused(tmp_path):
    s = ServerThread(tmp_path / "d").start()
    statuses: list[int] = []
    channel = grpc.insecure_channel(s.address)
    health = health_pb2_grpc.HealthStub(channel)
    try:
        with s.client() as admin:
            admin.create_agent("bob", ["read:/x/**"])
            s.app.intake.running += 1  # as if a call were still running: the drain waits
            stopping = threading.Thread(target=lambda: s.run(s.app.stop(grace=10)))
            stopping.start()
            wait_for(lambda: s.app.intake.closed)
            statuses.append(health.Check(health_pb2.HealthCheckRequest()).status)
            try:
                admin.list_agents()
                raise AssertionError("a call started while draining")
            except CapgateError as e:
                assert e.context.get("status") == "UNAVAILABLE" and "not executed" in e.message
            s.app.intake.running -= 1  # it finished: the server stops
            stopping.join(10)
            assert not stopping.is_alive()
    finally:
        channel.close()
        s.stop()
    assert statuses == [health_pb2.HealthCheckResponse.NOT_SERVING]
