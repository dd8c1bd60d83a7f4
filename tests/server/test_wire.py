"""Hostile input over the wire: every case is a clear error or a deny, never a crash."""

from __future__ import annotations

import random

import grpc
import pytest

from capgate import InvalidArgumentError, ResourceExhaustedError, Token, TokenIdentifier
from capgate_proto.v1 import verifier_pb2


@pytest.fixture
def setup(server):
    admin = server.client()
    _, cred = admin.create_agent("alice", ["read,write:/data/**"])
    alice = server.client(cred)
    svc = server.client(admin.create_principal("svc", "service").credential)
    token = alice.issue("read:/data/**").token
    yield server, admin, alice, svc, token
    for c in (admin, alice, svc):
        c.close()


def still_serving(svc, token):
    assert svc.verify(token, "read", "/data/ok", presenter="alice").allowed


def test_garbage_tokens_deny(setup):
    server, _, _, svc, token = setup
    rnd = random.Random(7)
    cases = {
        "random": "".join(rnd.choice("abcXYZ019-_+/=!é ") for _ in range(200)),
        "truncated": token[: len(token) // 2],
        "empty": "",
        "twenty kilobytes": "A" * (20 * 1024),
        "tampered": token[:40] + ("B" if token[40] != "B" else "C") + token[41:],
        "unknown caveat": Token.parse(token).append_raw(b"budget <= 5").to_text(),
        "non-utf8 caveat": Token.parse(token).append_raw(b"\xff\xfe").to_text(),
        "wrong key id": Token.mint(b"z" * 32, TokenIdentifier("kdead", "1" * 32, 1).encode())
        .attenuate("agent = alice")
        .to_text(),
        "foreign macaroon": Token.mint(b"z" * 32, b"keyid").to_text(),
        "null bytes": "\x00" * 64,
        "unicode": "ＡｇＥＴ" * 20,
    }
    expected = {
        "random": "malformed_token",
        "truncated": "malformed_token",
        "empty": "malformed_token",
        "twenty kilobytes": "malformed_token",
        "tampered": None,
        "unknown caveat": "bad_caveat",
        "non-utf8 caveat": "bad_caveat",
        "wrong key id": "unknown_key",
        "foreign macaroon": "unsupported_token",
        "null bytes": "malformed_token",
        "unicode": "malformed_token",
    }
    for name, text in cases.items():
        d = svc.verify(text, "read", "/data/x", presenter="alice")
        assert not d.allowed, name
        if expected[name]:
            assert d.code == expected[name], (name, d)
        assert d.reason, name
    still_serving(svc, token)


def test_a_message_over_its_method_limit_is_refused_unparsed(setup):
    _, _, _, svc, token = setup
    for size in (100 * 1024, 10 * 1024 * 1024):  # over Verify's 64 KiB; over every limit
        with pytest.raises(ResourceExhaustedError):
            svc.verify("A" * size, "read", "/data/x", presenter="alice")
    still_serving(svc, token)


@pytest.mark.parametrize(
    "field, value",
    [
        ("action", ""),
        ("action", "x" * 5000),
        ("resource", ""),
        ("resource", "/" + "a/" * 5000),
        ("resource", "/data/../etc/passwd"),
        ("resource", "/data/x\u202e"),
        ("presenter", "é" * 100),
    ],
)
def test_bad_request_fields_deny(setup, field, value):
    _, _, _, svc, token = setup
    kw = {"action": "read", "resource": "/data/x", "presenter": "alice", field: value}
    d = svc.verify(token, kw["action"], kw["resource"], presenter=kw["presenter"])
    assert not d.allowed and d.reason
    still_serving(svc, token)


def test_huge_context_denies(setup):
    _, _, _, svc, token = setup
    ctx = {f"k{i}": "v" for i in range(100)}
    d = svc.verify(token, "read", "/data/x", presenter="alice", ctx=ctx)
    assert d.code == "invalid_request" and "context" in d.reason


def test_undecodable_request_bytes_get_a_status_not_a_crash(setup):
    server, admin, _, svc, token = setup
    with grpc.insecure_channel(server.address) as ch:
        raw = ch.unary_unary("/capgate.v1.VerifierService/Verify")
        md = (("authorization", f"Bearer {server.admin_credential}"),)
        for payload in (b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f", bytes(range(256))):
            with pytest.raises(grpc.RpcError) as e:
                raw(payload, metadata=md, timeout=5)
            assert e.value.code() in (
                grpc.StatusCode.INTERNAL,
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.UNKNOWN,
            )
        # a well-formed message with unknown fields is fine
        msg = (
            verifier_pb2.VerifyRequest(
                token=token, action="read", resource="/data/x", presenter="alice"
            ).SerializeToString()
            + b"\xf8\x07\x01"
        )
        reply = verifier_pb2.VerifyResponse.FromString(raw(msg, metadata=md, timeout=5))
        assert reply.allowed
    still_serving(svc, token)


def test_bad_admin_and_issue_inputs_are_invalid_argument(setup):
    _, admin, alice, svc, token = setup
    for call in (
        lambda: admin.create_agent("", ["read:/x"]),
        lambda: admin.create_agent("x" * 200, ["read:/x"]),
        lambda: admin.create_agent("ok", ["read:/x/../y"]),
        lambda: admin.create_agent("ok", ["read:/x"], max_depth=99),
        lambda: admin.create_agent("ok", ["read:/x"], public_key=b"not a key"),
        # the identity point: it verifies proofs made without a private key
        lambda: admin.create_agent("ok", ["read:/x"], public_key=b"\x01" + bytes(31)),
        lambda: admin.add_public_key("alice", bytes(32)),  # a point of order 4
        # the audit log's names for the system and for failed logins
        lambda: admin.create_principal("unknown", "service"),
        lambda: admin.create_principal("capgate", "admin"),
        lambda: admin.create_agent("Unknown", ["read:/x"]),
        lambda: admin.create_agent("ok", ["read:/x"], description="\x00"),
        lambda: admin.update_agent("alice"),
        lambda: alice.issue("read:/data/x", caveats=["delegate = bob"]),
        lambda: alice.issue("read:/data/x", caveats=["x"] * 100),
        lambda: alice.attenuate(token, []),
        lambda: alice.delegate(token, "no such agent!"),
        lambda: admin.revoke("z" * 32),
        lambda: admin.tree("nope"),
    ):
        with pytest.raises(Exception) as e:
            call()
        assert isinstance(e.value, (InvalidArgumentError,)) or type(e.value).__name__ in (
            "NotFoundError",
        ), repr(e.value)
    still_serving(svc, token)


def test_a_client_that_leaves_max_depth_out_changes_nothing(setup):
    """Third-party stubs leave out what they do not set. An UpdateAgent that sets
    only the description used to read an absent max_depth as 0 and narrow the agent
    to no delegation; CreateAgent gave depth 0 instead of the server's default."""
    from capgate_proto.v1 import agent_pb2, agent_pb2_grpc, common_pb2

    server, admin, *_ = setup
    md = (("authorization", f"Bearer {server.admin_credential}"),)
    grant = [common_pb2.Grant(actions=["read"], resource="/data/**")]
    with grpc.insecure_channel(server.address) as ch:
        stub = agent_pb2_grpc.AgentServiceStub(ch)
        made = stub.CreateAgent(agent_pb2.CreateAgentRequest(id="raw", ceiling=grant), metadata=md)
        assert made.agent.max_depth == 3  # the server's default
        stub.UpdateAgent(agent_pb2.UpdateAgentRequest(id="raw", max_depth=2), metadata=md)
        for update in (
            agent_pb2.UpdateAgentRequest(id="raw", description="d", set_description=True),
            agent_pb2.UpdateAgentRequest(  # older clients' "unchanged"
                id="raw", max_depth=-1, description="e", set_description=True
            ),
        ):
            assert stub.UpdateAgent(update, metadata=md).max_depth == 2
        for bad in (-2, 17):
            with pytest.raises(grpc.RpcError) as e:
                stub.UpdateAgent(agent_pb2.UpdateAgentRequest(id="raw", max_depth=bad), metadata=md)
            assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "max depth must be between 0 and 16" in e.value.details()
        zero = agent_pb2.CreateAgentRequest(id="raw0", ceiling=grant, max_depth=0)
        assert stub.CreateAgent(zero, metadata=md).agent.max_depth == 0  # 0 is a depth
    with pytest.raises(InvalidArgumentError, match="max depth"):
        admin.create_agent("sdk", ["read:/data/**"], max_depth=-1)  # not sent as "default"
    assert admin.update_agent("raw", max_depth=0).max_depth == 0


def test_a_policy_set_without_a_warmup_keeps_the_servers(setup):
    """SetPolicy from stubs that leave warmup_seconds out: the server's learning
    period, not 0 (an agent contained at its first novel request)."""
    from capgate_proto.v1 import governance_pb2, governance_pb2_grpc

    server, *_ = setup
    md = (("authorization", f"Bearer {server.admin_credential}"),)
    with grpc.insecure_channel(server.address) as ch:
        stub = governance_pb2_grpc.GovernanceServiceStub(ch)
        policy = governance_pb2.GovernancePolicy(agent="alice", containment="suspend")
        assert stub.SetPolicy(policy, metadata=md).warmup_seconds < 0  # the server's
        policy = governance_pb2.GovernancePolicy(agent="alice", warmup_seconds=0)
        assert stub.SetPolicy(policy, metadata=md).warmup_seconds == 0  # 0 when asked for


def test_an_error_that_quotes_a_long_input_still_arrives_with_its_status(setup):
    """Messages quote what was sent; a long one used to push the status trailer past
    gRPC's 8 KiB bound, and the client got a transport error instead of the status."""
    from capgate import CapgateError

    server, admin, alice, *_ = setup
    for call, cls in (
        (lambda: alice.issue("read:/data/x", caveats=["x" * 5000]), InvalidArgumentError),
        (lambda: alice.issue("read:/data/x", caveats=["é" * 9000]), InvalidArgumentError),
        (lambda: admin.create_agent("ok", ["read:/" + "\u2603" * 3000]), InvalidArgumentError),
        (lambda: admin.tree("y" * 9000), CapgateError),
    ):
        with pytest.raises(cls) as e:
            call()
        assert "Stream removed" not in e.value.message and len(e.value.message) < 700


def test_a_grant_action_is_one_name_never_reread_as_more(setup):
    """Grants arrive as a list of actions and a resource; an action holding ',' or ':'
    was joined into the text form and read again as two actions, or as part of the
    resource. Each is one action name now, or INVALID_ARGUMENT."""
    from capgate_proto.v1 import agent_pb2, agent_pb2_grpc, common_pb2, token_pb2, token_pb2_grpc

    server, admin, alice, *_ = setup
    md = (("authorization", f"Bearer {server.admin_credential}"),)
    _, cred = admin.create_agent("bob", ["read:/data/**"])
    bob_md = (("authorization", f"Bearer {cred}"),)
    with grpc.insecure_channel(server.address) as ch:
        agents, tokens = agent_pb2_grpc.AgentServiceStub(ch), token_pb2_grpc.TokenServiceStub(ch)
        for actions in (["re,ad"], ["read:/data/x"], ["read", ""], ["read write"]):
            grant = common_pb2.Grant(actions=actions, resource="/data/**")
            with pytest.raises(grpc.RpcError) as e:
                agents.CreateAgent(
                    agent_pb2.CreateAgentRequest(id="c", ceiling=[grant]), metadata=md
                )
            assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT, actions
            with pytest.raises(grpc.RpcError) as e:
                tokens.IssueToken(token_pb2.IssueTokenRequest(grant=grant), metadata=bob_md)
            assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT, actions


def test_paging_and_time_bounds_out_of_range_are_refused(setup):
    """What the protos bound is refused outside the bound: ListEvents' limit (at most
    1000), WatchEvents' since (NaN read as 0, everything; inf as nothing, for ever),
    ListAlerts' and WatchAlerts' negative cursors."""
    from capgate_proto.v1 import audit_pb2, audit_pb2_grpc, governance_pb2, governance_pb2_grpc

    server, *_ = setup
    md = (("authorization", f"Bearer {server.admin_credential}"),)
    with grpc.insecure_channel(server.address) as ch:
        audit = audit_pb2_grpc.AuditServiceStub(ch)
        alerts = governance_pb2_grpc.GovernanceServiceStub(ch)
        calls = [
            lambda: audit.ListEvents(audit_pb2.ListEventsRequest(limit=1001), metadata=md),
            lambda: audit.ListEvents(audit_pb2.ListEventsRequest(limit=2**31 - 1), metadata=md),
            lambda: alerts.ListAlerts(governance_pb2.ListAlertsRequest(after_seq=-1), metadata=md),
            lambda: alerts.ListAlerts(governance_pb2.ListAlertsRequest(limit=-1), metadata=md),
        ]
        for since in (float("nan"), float("inf"), float("-inf")):
            request = audit_pb2.WatchEventsRequest(since=since)
            calls.append(lambda r=request: list(audit.WatchEvents(r, metadata=md, timeout=5)))
        request = governance_pb2.ListAlertsRequest(limit=-1)
        calls.append(lambda: list(alerts.WatchAlerts(request, metadata=md, timeout=5)))
        for call in calls:
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        ok = audit.ListEvents(audit_pb2.ListEventsRequest(limit=1000), metadata=md)
        assert ok.events
