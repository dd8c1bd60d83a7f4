"""Envoy's ext_authz Check, called with Envoy's own message types (xds-protos) against a
real server: the token from the configured header, the presenter from the peer's mTLS
principal or a proof (never from a client-set header), the action from the route or the
HTTP method, the resource from the path; 403 with the code, 503 when stale."""

from __future__ import annotations

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2 as ea
from envoy.service.auth.v3 import external_auth_pb2_grpc as ea_grpc

from harness import KeyedAgent, ServerProcess, ServerThread

PREFIX = "spiffe://example.org/agent/"
R = "/data/reports/q3"


def check_request(
    *, token=None, principal="", method="GET", path=R, headers=None, action=None, raw_headers=False
):
    h = dict(headers or {})
    if token is not None:
        h["authorization"] = f"Capgate {token}"
    http = ac.AttributeContext.HttpRequest(method=method, path=path, host="files.internal")
    if raw_headers:  # Envoy's encode_raw_headers: values as bytes in header_map
        http.header_map.headers.extend(
            [base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in h.items()]
        )
    else:
        http.headers.update(h)
    return ea.CheckRequest(
        attributes=ac.AttributeContext(
            source=ac.AttributeContext.Peer(principal=principal),
            request=ac.AttributeContext.Request(http=http),
            context_extensions={"capgate_action": action} if action else {},
        )
    )


class Envoy:
    """What Envoy does: call Check as a service principal."""

    def __init__(self, address, credential):
        self.channel = grpc.insecure_channel(address)
        self.stub = ea_grpc.AuthorizationStub(self.channel)
        self.metadata = (("authorization", f"Bearer {credential}"),)

    def check(self, request):
        return self.stub.Check(request, metadata=self.metadata, timeout=10)

    def close(self):
        self.channel.close()


def verdict(response):
    """(HTTP status, deny code or the agent let through)."""
    if response.status.code == 0:
        headers = {h.header.key: h.header.value for h in response.ok_response.headers}
        return 200, headers.get("capgate-agent")
    headers = {h.header.key: h.header.value for h in response.denied_response.headers}
    return response.denied_response.status.code, headers.get("capgate-deny")


@pytest.fixture
def mesh(tmp_path):
    s = ServerThread(
        tmp_path / "d", ext_authz=True, spiffe_prefix=PREFIX, poll_interval=3600
    ).start()
    alice = KeyedAgent(s)
    envoy = Envoy(s.address, alice.service_credential)
    yield s, alice, envoy
    envoy.close()
    alice.close()
    s.stop()


def test_the_mtls_principal_presents_the_agent(mesh):
    _, alice, envoy = mesh
    r = envoy.check(check_request(token=alice.token, principal=PREFIX + "alice"))
    assert verdict(r) == (200, "alice")
    # the header it sets replaces whatever the client sent under that name
    opt = r.ok_response.headers[0]
    assert opt.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    r = envoy.check(check_request(token=alice.token, principal=PREFIX + "bob"))
    assert verdict(r) == (403, "not_holder")
    assert "held by agent 'alice'" in r.denied_response.body
    assert r.status.code == 7  # PERMISSION_DENIED


def test_the_presenter_never_comes_from_a_client_header(mesh):
    _, alice, envoy = mesh
    spoofed = {
        "capgate-agent": "alice",
        "x-forwarded-client-cert": f"URI={PREFIX}alice",
        "x-capgate-presenter": "alice",
    }
    r = envoy.check(check_request(token=alice.token, headers=spoofed))
    assert verdict(r) == (403, "no_presenter")
    # a principal outside the prefix, or not an agent id, presents no one
    for principal in (
        "spiffe://evil.org/agent/alice",
        PREFIX + "alice/extra",
        PREFIX,
        PREFIX + "al ice",
    ):
        assert verdict(envoy.check(check_request(token=alice.token, principal=principal))) == (
            403,
            "no_presenter",
        ), principal


def test_action_from_the_route_or_the_method_and_resource_from_the_path(mesh):
    _, alice, envoy = mesh
    me = PREFIX + "alice"
    # POST means write; the token reads only
    assert verdict(envoy.check(check_request(token=alice.token, principal=me, method="POST"))) == (
        403,
        "caveat_failed",
    )
    # a route that says POST here reads (a search endpoint, say)
    assert verdict(
        envoy.check(check_request(token=alice.token, principal=me, method="POST", action="read"))
    ) == (200, "alice")
    assert verdict(
        envoy.check(check_request(token=alice.token, principal=me, method="OPTIONS"))
    ) == (403, "invalid_request")
    # the query is not part of the resource
    assert verdict(
        envoy.check(check_request(token=alice.token, principal=me, path=R + "?page=2"))
    ) == (200, "alice")
    r = envoy.check(check_request(token=alice.token, principal=me, path="/data/hr/x"))
    assert verdict(r) == (403, "caveat_failed")
    assert verdict(
        envoy.check(check_request(token=alice.token, principal=me, path="/data//x"))
    ) == (403, "invalid_request")
    # raw header values (encode_raw_headers) are read the same way
    assert verdict(
        envoy.check(check_request(token=alice.token, principal=me, raw_headers=True))
    ) == (200, "alice")


@pytest.mark.parametrize(
    "path",
    [
        "/data/reports/%2e%2e/hr/x",
        "/data/reports/%2E%2E/hr/x",
        "/data/reports/..%2fhr%2fx",
        "/data/reports/..;/hr/x",
        "/data/reports/%252e%252e/hr/x",
        "/data/reports/..%5chr",
    ],
)
def test_a_path_the_upstream_could_read_as_another_is_denied(mesh, path):
    """Envoy passes the path as the client sent it; a server behind it may decode and
    normalise it. A path spelling a way out of the token's resources is refused, never
    checked as an ordinary name that matches ``/data/reports/**``."""
    _, alice, envoy = mesh
    r = envoy.check(check_request(token=alice.token, principal=PREFIX + "alice", path=path))
    assert verdict(r) == (403, "invalid_request")
    assert verdict(
        envoy.check(
            check_request(token=alice.token, principal=PREFIX + "alice", path="/data/reports/q%33")
        )
    ) == (200, "alice")  # an ordinary escape is read as what it spells: /data/reports/q3


def test_missing_or_malformed_tokens_deny(mesh):
    _, alice, envoy = mesh
    me = PREFIX + "alice"
    assert verdict(envoy.check(check_request(principal=me))) == (403, "missing_token")
    for value in (
        "Bearer " + alice.token,
        "Capgate",
        f"Capgate {alice.token} extra",
        f"Capgate {alice.token},Capgate {alice.token}",
    ):
        r = envoy.check(check_request(principal=me, headers={"authorization": value}))
        assert verdict(r) == (403, "missing_token"), value
    r = envoy.check(check_request(principal=me, headers={"authorization": "Capgate AAAA"}))
    assert verdict(r) == (403, "malformed_token")


def test_a_proof_through_envoy_proves_the_presenter(mesh):
    _, alice, envoy = mesh
    path = R + "?full=1"
    headers = alice.presenter().headers("GET", path)
    req = check_request(path=path, headers=headers)
    assert verdict(envoy.check(req)) == (200, "alice")
    assert verdict(envoy.check(req)) == (403, "proof_replayed")
    # a proof signed for another request
    other = alice.presenter().headers("DELETE", path)
    assert verdict(envoy.check(check_request(path=path, headers=other))) == (403, "bad_proof")


def test_where_proof_is_required_mtls_alone_is_not_enough(mesh):
    _, alice, envoy = mesh
    alice.admin.update_agent("alice", require_proof=True)
    me = PREFIX + "alice"
    assert verdict(envoy.check(check_request(token=alice.token, principal=me))) == (
        403,
        "proof_required",
    )
    headers = alice.presenter().headers("GET", R)
    assert verdict(envoy.check(check_request(principal=me, headers=headers))) == (200, "alice")
    # the proof's agent and the mTLS peer must be the same agent
    headers = alice.presenter().headers("GET", R)
    r = envoy.check(check_request(principal=PREFIX + "bob", headers=headers))
    assert verdict(r) == (403, "not_holder")


def test_a_stale_replica_answers_503(mesh):
    s, alice, envoy = mesh
    s.loop.call_soon_threadsafe(setattr, s.app.replica, "fresh_until", 0.0)
    r = envoy.check(check_request(token=alice.token, principal=PREFIX + "alice"))
    assert verdict(r) == (503, "unavailable")
    assert r.status.code == 14  # UNAVAILABLE


def test_a_spent_budget_answers_429(mesh):
    from capgate import Token

    _, alice, envoy = mesh
    limited = Token.parse(alice.token).attenuate("uses <= 1").to_text()
    req = check_request(token=limited, principal=PREFIX + "alice")
    assert verdict(envoy.check(req)) == (200, "alice")
    r = envoy.check(req)
    assert verdict(r) == (429, "budget_exhausted")
    assert r.status.code == 8  # RESOURCE_EXHAUSTED


def test_only_services_and_admins_may_call_check(mesh):
    s, alice, _ = mesh
    as_agent = Envoy(s.address, alice.credential)
    with pytest.raises(grpc.RpcError) as e:
        as_agent.check(check_request(token=alice.token, principal=PREFIX + "alice"))
    assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED
    as_agent.close()
    nobody = Envoy(s.address, "not-a-credential")
    with pytest.raises(grpc.RpcError) as e:
        nobody.check(check_request(token=alice.token, principal=PREFIX + "alice"))
    assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED
    nobody.close()


def test_a_header_of_its_own_may_carry_the_bare_token(tmp_path):
    s = ServerThread(
        tmp_path / "d", ext_authz=True, spiffe_prefix=PREFIX, ext_authz_header="X-Capgate-Token"
    ).start()
    try:
        alice = KeyedAgent(s)
        envoy = Envoy(s.address, alice.service_credential)
        me = PREFIX + "alice"
        for value in (alice.token, f"Capgate {alice.token}"):
            r = envoy.check(check_request(principal=me, headers={"x-capgate-token": value}))
            assert verdict(r) == (200, "alice")
        # the authorization header is not read then
        assert verdict(envoy.check(check_request(token=alice.token, principal=me))) == (
            403,
            "missing_token",
        )
        envoy.close()
        alice.close()
    finally:
        s.stop()


def test_without_the_flag_check_is_not_served(server):
    alice = KeyedAgent(server)
    envoy = Envoy(server.address, alice.service_credential)
    with pytest.raises(grpc.RpcError) as e:
        envoy.check(check_request(token=alice.token, principal=PREFIX + "alice"))
    assert e.value.code() is grpc.StatusCode.UNIMPLEMENTED
    envoy.close()
    alice.close()


@pytest.mark.slow
def test_capgate_serve_flags(tmp_path):
    p = ServerProcess(
        tmp_path / "d",
        ["--ext-authz", "--spiffe-prefix", PREFIX, "--require-proof", "--proof-window", "5"],
    ).start()
    try:
        alice = KeyedAgent(p)
        envoy = Envoy(p.address, alice.service_credential)
        me = PREFIX + "alice"
        assert verdict(envoy.check(check_request(token=alice.token, principal=me))) == (
            403,
            "proof_required",
        )
        headers = alice.presenter().headers("GET", R)
        assert verdict(envoy.check(check_request(principal=me, headers=headers))) == (200, "alice")
        envoy.close()
        alice.close()
    finally:
        p.stop()
