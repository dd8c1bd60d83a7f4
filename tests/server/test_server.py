"""The server end to end through the SDK: agents, tokens, verify, revoke, roles, errors."""

from __future__ import annotations

import asyncio

import pytest
from pymacaroons import Macaroon
from pymacaroons.serializers import BinarySerializer

from capgate import (
    AlreadyExistsError,
    AuthenticationError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    Token,
)
from capgate_client import AsyncClient, Client


@pytest.fixture
def admin(server):
    with server.client() as c:
        yield c


@pytest.fixture
def alice(server, admin):
    _, cred = admin.create_agent("alice", ["read,write:/data/**"], max_ttl=3600, max_depth=2)
    with server.client(cred) as c:
        yield c


@pytest.fixture
def service(server, admin):
    cred = admin.create_principal("files", "service")
    with server.client(cred.credential) as c:
        yield c


def test_issue_verify_attenuate_revoke(alice, service, admin):
    t = alice.issue("read:/data/reports/*", ttl=900)
    assert len(t.token_id) == 32 and t.expires.endswith("Z")
    caveats = Token.parse(t.token).caveats
    assert caveats[:3] == ("agent = alice", "action in read", "resource /data/reports/*")
    ok = service.verify(t.token, "read", "/data/reports/q3", presenter="alice")
    assert ok.allowed and ok.chain == ("alice",) and ok.token_id == t.token_id
    no = service.verify(t.token, "write", "/data/reports/q3", presenter="alice")
    assert not no.allowed and no.code == "caveat_failed" and no.caveat == "action in read"
    # offline attenuation and the server's give the same token
    offline = Token.parse(t.token).attenuate("resource /data/reports/q3").to_text()
    assert alice.attenuate(t.token, ["resource /data/reports/q3"]).token == offline
    assert not service.verify(offline, "read", "/data/reports/q4", presenter="alice").allowed
    r = admin.revoke(t.token_id, "leaked")
    assert r.newly_revoked and r.id == t.token_id
    d = service.verify(offline, "read", "/data/reports/q3", presenter="alice")
    assert not d.allowed and d.code == "revoked"
    assert not admin.revoke(t.token_id).newly_revoked


def test_pymacaroons_attenuation_verifies_through_the_server(alice, service):
    t = alice.issue("read,write:/data/**")
    m = Macaroon.deserialize(t.token)
    m.add_first_party_caveat("action in read")
    narrowed = m.serialize(serializer=BinarySerializer())
    assert service.verify(narrowed, "read", "/data/x", presenter="alice").allowed
    d = service.verify(narrowed, "write", "/data/x", presenter="alice")
    assert not d.allowed and d.caveat == "action in read"


def test_issue_is_refused_beyond_ceiling_or_ttl(alice):
    with pytest.raises(PermissionDeniedError, match="beyond the ceiling"):
        alice.issue("delete:/data/x")
    with pytest.raises(PermissionDeniedError, match="beyond the ceiling"):
        alice.issue("read:/**")
    with pytest.raises(PermissionDeniedError, match="max TTL"):
        alice.issue("read:/data/x", ttl=7200)
    with pytest.raises(InvalidArgumentError):
        alice.issue("read:/data/x", caveats=["frobnicate = 1"])
    with pytest.raises(InvalidArgumentError):
        alice.issue("read:data")


def test_holder_binding_through_the_server(alice, service, admin):
    t = alice.issue("read:/data/**").token
    assert service.verify(t, "read", "/data/x").code == "no_presenter"
    assert service.verify(t, "read", "/data/x", presenter="mallory").code == "not_holder"
    # an agent verifying speaks only for itself
    assert alice.verify(t, "read", "/data/x").allowed
    with pytest.raises(PermissionDeniedError):
        alice.verify(t, "read", "/data/x", presenter="bob")


def test_live_control_of_agents(alice, service, admin):
    t = alice.issue("read,write:/data/**").token
    assert service.verify(t, "write", "/data/x", presenter="alice").allowed
    admin.update_agent("alice", grants=["read:/data/**"])
    d = service.verify(t, "write", "/data/x", presenter="alice")
    assert d.code == "beyond_ceiling"
    admin.suspend_agent("alice")
    assert service.verify(t, "read", "/data/x", presenter="alice").code == "agent_suspended"
    with pytest.raises(PermissionDeniedError, match="suspended"):
        alice.issue("read:/data/x")
    admin.resume_agent("alice")
    assert service.verify(t, "read", "/data/x", presenter="alice").allowed
    info = admin.revoke_all("alice")
    assert info.epoch == 1
    assert service.verify(t, "read", "/data/x", presenter="alice").code == "agent_tokens_revoked"
    fresh = alice.issue("read:/data/x").token
    assert service.verify(fresh, "read", "/data/x", presenter="alice").allowed


def test_agents_admin(admin, server):
    info, cred = admin.create_agent(
        "bot-1", ["read:/a/*", "exec:/tools/**"], owner="ops", description="nightly job"
    )
    assert cred.startswith("cg_") and info.ceiling == ("read:/a/*", "exec:/tools/**")
    assert info.max_ttl == 3600 and info.max_depth == 3 and info.owner == "ops"
    assert [a.id for a in admin.list_agents()] == ["bot-1"]
    assert admin.get_agent("bot-1").description == "nightly job"
    with pytest.raises(AlreadyExistsError):
        admin.create_agent("bot-1", ["read:/a/*"])
    with pytest.raises(NotFoundError):
        admin.get_agent("nobody")
    with pytest.raises(InvalidArgumentError):
        admin.create_agent("bad id", ["read:/a/*"])
    with pytest.raises(InvalidArgumentError):
        admin.create_agent("bot-2", [])
    with pytest.raises(InvalidArgumentError):
        admin.create_agent("bot-2", ["read:/a/*"], max_ttl=10**9)
    with server.client(cred) as bot:
        assert bot.get_agent("bot-1").id == "bot-1"
        with pytest.raises(PermissionDeniedError):
            bot.get_agent("other")
        with pytest.raises(PermissionDeniedError):
            bot.list_agents()
        with pytest.raises(PermissionDeniedError):
            bot.create_agent("x", ["read:/a/*"])


def test_roles_and_authentication(server, service, admin):
    with server.client("cg_not-a-real-credential") as nobody:
        with pytest.raises(AuthenticationError):
            nobody.list_agents()
        with pytest.raises(AuthenticationError):
            nobody.verify("x", "read", "/x", presenter="a")
    with pytest.raises(PermissionDeniedError):
        service.issue("read:/x")
    with pytest.raises(PermissionDeniedError):
        service.list_agents()
    with pytest.raises(PermissionDeniedError):
        admin.issue("read:/x")  # admins are not agents
    with pytest.raises(PermissionDeniedError):
        service.revoke("a" * 32)


def test_agent_may_revoke_only_its_own(server, admin, alice, service):
    _, bob_cred = admin.create_agent("bob", ["read:/data/**"])
    t = alice.issue("read:/data/x")
    with server.client(bob_cred) as bob:
        with pytest.raises(PermissionDeniedError):
            bob.revoke(t.token_id)
        with pytest.raises(PermissionDeniedError):
            bob.revoke(t.token)
        with pytest.raises(PermissionDeniedError):  # unknown or not its own: alike
            bob.revoke("b" * 32)
    assert alice.revoke(t.token).id == t.token_id
    assert service.verify(t.token, "read", "/data/x", presenter="alice").code == "revoked"


def test_revoke_an_unknown_id_as_admin(admin):
    r = admin.revoke("c" * 32, "pre-emptive")
    assert r.newly_revoked
    with pytest.raises(InvalidArgumentError):
        admin.revoke("not-hex")


def test_inspect_through_the_server(alice, admin):
    t = alice.issue("read:/data/*", ttl=60)
    i = admin.inspect(t.token)
    assert i.token_id == t.token_id and i.signature_valid and not i.revoked
    assert i.status == "valid" and [h.agent for h in i.chain] == ["alice"]
    assert i.chain[0].restrictions[:2] == ("action in read", "resource /data/*")
    admin.revoke(t.token_id)
    i = admin.inspect(t.token)
    assert i.revoked and "revoked" in i.status and i.chain[0].revoked
    with pytest.raises(InvalidArgumentError):
        admin.inspect("garbage!")


def test_verify_batch_mixes_results(alice, service):
    t = alice.issue("read:/data/**").token
    results = service.verify_batch(
        [
            (t, "read", "/data/a", "alice", None),
            (t, "write", "/data/a", "alice", None),
            ("junk", "read", "/data/a", "alice", None),
            (t, "read", "/data/a", "bob", {"tool": "x"}),
        ]
    )
    assert [r.allowed for r in results] == [True, False, False, False]
    assert [r.code for r in results] == [
        "allowed",
        "caveat_failed",
        "malformed_token",
        "not_holder",
    ]
    with pytest.raises(InvalidArgumentError, match="at most 1024"):
        service.verify_batch([(t, "read", "/data/a", "alice", None)] * 1025)


def test_audit_records_every_decision_attributed(alice, service, admin):
    t = alice.issue("read:/data/**")
    service.verify(t.token, "read", "/data/a", presenter="alice")
    service.verify(t.token, "write", "/data/a", presenter="alice")
    admin.revoke(t.token_id, "done")
    events = admin.audit(token_id=t.token_id)
    kinds = [(e.kind, e.principal, e.ok) for e in events]
    assert ("issue", "alice", True) in kinds
    assert ("verify", "files", True) in kinds and ("verify", "files", False) in kinds
    assert ("revoke", "admin", True) in kinds
    deny = next(e for e in events if e.kind == "verify" and not e.ok)
    assert deny.chain == ("alice",) and "action in read" in deny.reason
    assert all(e.chain == ("alice",) for e in admin.audit(agent="alice", kind="verify"))
    with pytest.raises(PermissionDeniedError):
        service.audit()


def test_async_client(server, admin):
    _, cred = admin.create_agent("async-agent", ["read:/x/**"])

    async def go():
        async with (
            AsyncClient(server.address, cred) as a,
            AsyncClient(server.address, server.admin_credential) as adm,
        ):
            t = await a.issue("read:/x/*")
            results = await asyncio.gather(
                *[a.verify(t.token, "read", f"/x/{i}") for i in range(20)]
            )
            assert all(r.allowed for r in results)
            batch = await adm.verify_batch([(t.token, "read", "/x/1", "async-agent", None)])
            assert batch[0].allowed
            with pytest.raises(PermissionDeniedError):
                await a.issue("write:/x/*")
            await adm.suspend_agent("async-agent")
            assert (
                await adm.verify(t.token, "read", "/x/1", presenter="async-agent")
            ).code == "agent_suspended"

    asyncio.run(go())


def test_health_and_reflection(server):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(server.address) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        resp = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="capgate.v1.VerifierService")
        )
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_client_needs_a_credential(server):
    with pytest.raises(InvalidArgumentError):
        Client(server.address, "")


def test_reflection_answers_without_a_credential_and_lists_the_services(server):
    """grpcurl and other tools read the API without a credential: it is what the shipped
    .proto files say; every capgate call still needs one."""
    import grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.insecure_channel(server.address) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        reply = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=5)))
        names = {s.name for s in reply.list_services_response.service}
        assert {
            "capgate.v1.VerifierService",
            "capgate.v1.TokenService",
            "capgate.v1.AgentService",
            "capgate.v1.KeyService",
        } <= names


def test_revoking_a_narrowed_copy_keeps_the_entry_as_long_as_the_token(alice, service, admin):
    t = alice.issue("read:/data/**", ttl=3600)
    narrowed = Token.parse(t.token).attenuate("expires < 2001-01-01T00:00:00Z").to_text()
    r = alice.revoke(narrowed, "pre-empting")
    assert r.id == t.token_id and r.expires == t.expires  # the issued token's expiry
    again = admin.revoke(t.token_id, "really")
    assert not again.newly_revoked and again.expires == t.expires
    assert service.verify(t.token, "read", "/data/x", presenter="alice").code == "revoked"


def test_an_appended_did_cannot_aim_a_revocation_at_someone_else(server, admin, alice, service):
    _, bob_cred = admin.create_agent("bob", ["read:/data/**"])
    victim = alice.issue("read:/data/**")
    with server.client(bob_cred) as bob:
        own = bob.issue("read:/data/**").token
        aimed = Token.parse(own).attenuate(f"did = {victim.token_id}").to_text()
        r = bob.revoke(aimed, "mischief")
        assert r.id != victim.token_id  # bob's own token id, not alice's
    assert service.verify(victim.token, "read", "/data/x", presenter="alice").allowed
    assert service.verify(own, "read", "/data/x", presenter="bob").code == "revoked"


def test_a_replica_catches_up_a_long_backlog_before_it_counts_as_fresh(server, monkeypatch):
    import capgate_server._replica as replica_module
    from capgate_server.store import AuditEvent, SqliteStore

    monkeypatch.setattr(replica_module, "_PAGE", 10)  # pages of 10 changes
    other = SqliteStore(server.settings.data_dir / "capgate.db")  # "another replica" writes
    ids = [f"{i:032x}" for i in range(1, 36)]
    for i in ids:
        other.revoke(i, 1.0, 4e9, "admin", "", AuditEvent(1.0, "admin", "revoke", i))
    other.close()
    replica = server.app.replica
    server.run(replica.sync())
    assert all(replica.revocations.is_revoked(i) for i in ids)


def test_the_async_client_has_every_method_of_the_blocking_one():
    public = lambda cls: {n for n in dir(cls) if not n.startswith("_")}  # noqa: E731
    assert public(Client) - {"close"} <= public(AsyncClient)
