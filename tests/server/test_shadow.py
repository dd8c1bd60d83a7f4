"""Shadow mode: a shadow ceiling is watched beside the ceiling, never enforced.

Pins: what it would deny is allowed, recorded as ``verify.shadow`` with the deny's
code and reason, and raises one ``shadow-deny`` alert that never contains (even under
``suspend``); ``agent update --mode enforce`` makes it the ceiling, and then it denies.
And a property: whatever shadow ceilings any agents have, every decision is the one the
enforced ceilings give (shadow never turns a deny into an allow, nor an allow into a
deny), and only an agent in shadow mode gets shadow records.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capgate import Ceiling

from harness import ServerThread, cli

DAY = 86400.0


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    server = ServerThread(tmp_path_factory.mktemp("shadow") / "data").start()
    admin = server.client()
    tokens = {}
    for name in ("watched", "plain"):
        _, cred = admin.create_agent(name, ["read,write:/data/**"])
        with server.client(cred) as agent:
            tokens[name] = agent.issue("read,write:/data/**").token
    svc = server.client(admin.create_principal("svc", "service").credential)
    replica = server.app.replica

    def settle() -> None:
        server.run(replica.audit.flush())
        server.run(replica.governance.step())

    yield server, admin, svc, tokens, settle
    svc.close()
    admin.close()
    server.stop()


def test_shadow_records_and_alerts_what_it_would_deny_and_enforce_makes_it_real(world):
    server, admin, svc, tokens, settle = world
    env = {"CAPGATE_SERVER": server.address, "CAPGATE_CREDENTIAL": server.admin_credential}
    admin.set_policy("watched", containment="suspend")
    r = cli(
        "agent",
        "update",
        "watched",
        "--mode",
        "shadow",
        "--grant",
        "read:/data/reports/**",
        env=env,
    )
    assert r.returncode == 0, r.stderr
    token = tokens["watched"]
    assert svc.verify(token, "read", "/data/reports/q3", presenter="watched").allowed
    hr = svc.verify(token, "read", "/data/hr/salaries", presenter="watched")
    assert hr.allowed and hr.code == "allowed"  # shadow never changes the decision
    settle()
    [record] = admin.audit(kind="verify.shadow", agent="watched")
    assert (record.code, record.resource) == ("beyond_ceiling", "/data/hr/salaries")
    assert "shadow ceiling" in record.reason and "allowed: shadow mode" in record.reason
    [alert] = [a for a in admin.alerts("watched") if a.kind == "shadow-deny"]
    assert alert.reason == (
        "watched would be denied read on /data/hr/** by its shadow ceiling (allowed: shadow mode)"
    )
    assert alert.containment == "alert" and admin.get_agent("watched").status == "active"

    r = cli("agent", "update", "watched", "--mode", "enforce", env=env)
    assert r.returncode == 0, r.stderr
    assert admin.get_agent("watched").ceiling == ("read:/data/reports/**",)
    assert admin.get_policy("watched").shadow == ()
    assert (
        svc.verify(token, "read", "/data/hr/salaries", presenter="watched").code == "beyond_ceiling"
    )
    admin.update_agent("watched", grants=["read,write:/data/**"])


GRANT = st.sampled_from(
    [
        "read:/data/**",
        "write:/data/**",
        "read:/data/reports/**",
        "read,write:/data/hr/*",
        "write:/data/reports/q1",
    ]
)
REQUEST = st.tuples(
    st.sampled_from(["read", "write"]),
    st.sampled_from(["/data/reports/q1", "/data/hr/x", "/data/a/b", "/data"]),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ceilings=st.tuples(
        st.lists(GRANT, min_size=1, max_size=3), st.lists(GRANT, min_size=1, max_size=3)
    ),
    shadows=st.tuples(st.lists(GRANT, max_size=3), st.lists(GRANT, max_size=3)),
    requests=st.lists(REQUEST, min_size=1, max_size=4),
)
def test_shadow_never_changes_a_decision(world, ceilings, shadows, requests):
    server, admin, svc, tokens, settle = world
    names = ("watched", "plain")
    for name, ceiling, shadow in zip(names, ceilings, shadows, strict=True):
        admin.update_agent(name, grants=ceiling)
        admin.set_policy(name, shadow=shadow)
    settle()
    before = {n: len(admin.audit(kind="verify.shadow", agent=n, limit=1000)) for n in names}
    for name, ceiling, shadow in zip(names, ceilings, shadows, strict=True):
        enforced = Ceiling.parse(ceiling)
        for action, resource in requests:
            d = svc.verify(tokens[name], action, resource, presenter=name)
            assert d.allowed == enforced.allows(action, resource), (name, action, resource)
    settle()
    for name, shadow in zip(names, shadows, strict=True):
        after = len(admin.audit(kind="verify.shadow", agent=name, limit=1000))
        ceiling = Ceiling.parse(ceilings[names.index(name)])
        would = [
            r
            for r in requests
            if ceiling.allows(*r) and shadow and not Ceiling.parse(shadow).allows(*r)
        ]
        assert (after > before[name]) == bool(would), (name, shadow, requests)
