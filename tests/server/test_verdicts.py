"""The verifier's wire path (``VerifierWire``): remembered verdicts never outlive a change,
never skip a count, and are all audited.

Against a real server: a request allowed (and so remembered) is denied at once after
a revocation, a suspension, an epoch bump, a narrowed ceiling or a root key change,
through Verify, VerifyBatch and VerifyStream alike; tokens with budgets and agents
with a rate are counted on every use however often the same request comes; every
verdict is tallied by the audit log; odd encodings and garbage are parsed or refused
as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from capgate import PermissionDeniedError
from capgate_client import Client
from capgate_proto.v1 import verifier_pb2

from harness import ServerThread

REQ = ("read", "/data/a", "alice")


@pytest.fixture
def setup(server: ServerThread) -> Iterator[tuple[ServerThread, Client, Client, Client]]:
    with server.client() as admin:
        _, cred = admin.create_agent("alice", ["read,write:/data/**"])
        svc = admin.create_principal("files", "service").credential
        with server.client(cred) as alice, Client(server.address, svc) as service:
            yield server, admin, alice, service


def _all_ways(service: Client, token: str, n: int = 3) -> list[tuple[bool, str]]:
    """The same request n times each through Verify, VerifyBatch and VerifyStream."""
    out = [
        (r.allowed, r.code)
        for r in (service.verify(token, *REQ[:2], presenter=REQ[2]) for _ in range(n))
    ]
    out += [(r.allowed, r.code) for r in service.verify_batch([(token, *REQ, None)] * n)]
    out += [(r.allowed, r.code) for r in service.verify_stream([(token, *REQ, None)] * n)]
    return out


@pytest.mark.parametrize("change", ["revoke", "suspend", "revoke_all", "ceiling", "root_key"])
def test_a_remembered_allow_ends_with_any_change(setup, change: str) -> None:
    server, admin, alice, service = setup
    token = alice.issue("read:/data/**").token
    assert _all_ways(service, token) == [(True, "allowed")] * 9  # remembered now
    if change == "revoke":
        admin.revoke(token)
    elif change == "suspend":
        admin.suspend_agent("alice")
    elif change == "revoke_all":
        admin.revoke_all("alice")
    elif change == "ceiling":
        admin.update_agent("alice", grants=["write:/data/**"])
    else:
        admin.rotate_key()
    verdicts = _all_ways(service, token)
    if change == "root_key":  # a new signing key: old tokens still verify, freshly decided
        assert verdicts == [(True, "allowed")] * 9
    else:
        assert not any(ok for ok, _ in verdicts), verdicts


def test_budgets_are_counted_on_every_use(setup) -> None:
    server, admin, alice, service = setup
    token = alice.issue("read:/data/**").token
    from capgate import Token

    limited = Token.parse(token).attenuate("uses <= 4").to_text()
    batch = service.verify_batch([(limited, *REQ, None)] * 3)
    assert [r.allowed for r in batch] == [True] * 3 and all(r.counted for r in batch)
    batch = service.verify_batch([(limited, *REQ, None)] * 3)
    assert [(r.allowed, r.code) for r in batch] == [
        (True, "allowed"),
        (False, "budget_exhausted"),
        (False, "budget_exhausted"),
    ]
    assert not service.verify(limited, *REQ[:2], presenter=REQ[2]).allowed
    assert not any(r.allowed for r in service.verify_stream([(limited, *REQ, None)] * 2))


def test_an_agents_rate_is_counted_on_every_use(setup) -> None:
    server, admin, alice, service = setup
    _, cred = admin.create_agent("bob", ["read:/data/**"], rate="3/1h")
    with server.client(cred) as bob:
        token = bob.issue("read:/data/**").token
    req = (token, "read", "/data/a", "bob", None)
    assert [r.allowed for r in service.verify_batch([req] * 2)] == [True, True]
    assert [r.allowed for r in service.verify_batch([req] * 2)] == [True, False]
    assert not service.verify(token, "read", "/data/a", presenter="bob").allowed


def test_every_verdict_is_audited(setup) -> None:
    server, admin, alice, service = setup
    token = alice.issue("read:/data/**").token
    audit = server.app.replica.audit  # type: ignore[union-attr]
    before = audit.decisions
    _all_ways(service, token, n=5)
    service.verify_batch([(token, *REQ, None)] * 100)
    assert audit.decisions - before == 15 + 100


def test_an_agent_caller_is_never_answered_from_a_services_verdict(setup) -> None:
    server, admin, alice, service = setup
    _, cred = admin.create_agent("mallory", ["read:/data/**"])
    token = alice.issue("read:/data/**").token
    assert service.verify_batch([(token, *REQ, None)] * 2)[1].allowed  # remembered
    with server.client(cred) as mallory:  # the same bytes: refused, never answered
        with pytest.raises(PermissionDeniedError):
            mallory.verify_batch([(token, *REQ, None)])
        assert not mallory.verify(token, *REQ[:2]).allowed  # as herself: not the holder


def test_odd_encodings_and_garbage(server: ServerThread) -> None:
    with server.client() as admin:
        _, cred = admin.create_agent("alice", ["read:/data/**"])
        svc = admin.create_principal("files", "service").credential
    with server.client(cred) as alice:
        token = alice.issue("read:/data/**").token
    one = verifier_pb2.VerifyRequest(
        token=token, action="read", resource="/data/a", presenter="alice"
    )
    auth = (("authorization", f"Bearer {svc}"),)
    with grpc.insecure_channel(server.address) as ch:
        batch = ch.unary_unary("/capgate.v1.VerifierService/VerifyBatch")
        # a field the batch does not have (unknown: skipped), then the request
        odd = b"\x10\x01" + verifier_pb2.VerifyBatchRequest(requests=[one]).SerializeToString()
        for _ in range(2):
            reply = verifier_pb2.VerifyBatchResponse.FromString(batch(odd, metadata=auth))
            assert [r.allowed for r in reply.responses] == [True]
        for garbage in (b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x05ab", b"\x0a"):
            with pytest.raises(grpc.RpcError) as e:
                batch(garbage, metadata=auth)
            assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        unary = ch.unary_unary("/capgate.v1.VerifierService/Verify")
        with pytest.raises(grpc.RpcError) as e:
            unary(b"\x0a\x05ab", metadata=auth)
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert verifier_pb2.VerifyResponse.FromString(
            unary(one.SerializeToString(), metadata=auth)
        ).allowed


# -- splitting a batch on the wire format -------------------------------------------


_TEXT = st.text(max_size=40)
_REQUESTS = st.lists(
    st.builds(
        verifier_pb2.VerifyRequest,
        token=st.text(max_size=300),
        action=_TEXT,
        resource=_TEXT,
        presenter=_TEXT,
        ctx=st.dictionaries(_TEXT, _TEXT, max_size=2),
        discharges=st.lists(_TEXT, max_size=2),
    ),
    max_size=20,
)


@given(_REQUESTS)
def test_a_batch_splits_into_its_requests(requests: list[Any]) -> None:
    from capgate_server._verdicts import split_requests

    data = verifier_pb2.VerifyBatchRequest(requests=requests).SerializeToString()
    parts = split_requests(data)
    assert parts is not None
    assert [verifier_pb2.VerifyRequest.FromString(p) for p in parts] == requests


@given(st.binary(max_size=400))
def test_any_bytes_split_as_protobuf_reads_them_or_not_at_all(data: bytes) -> None:
    """Never a crash; a split, when there is one, is what protobuf itself reads."""
    from capgate_server._verdicts import split_requests

    parts = split_requests(data)
    if parts is None:
        return
    try:
        whole = verifier_pb2.VerifyBatchRequest.FromString(data)
    except DecodeError:  # the batch framing holds, an item does not: refused item by item
        with pytest.raises(DecodeError):
            for p in parts:
                verifier_pb2.VerifyRequest.FromString(p)
        return
    assert [verifier_pb2.VerifyRequest.FromString(p) for p in parts] == list(whole.requests)
