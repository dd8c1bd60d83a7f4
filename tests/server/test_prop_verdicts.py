"""Property: through Verify, VerifyBatch and VerifyStream, remembered or not, every verdict
is the one the state says, whatever changes come between the requests.

A model follows one agent's two tokens (a plain one and one with ``uses <= 3``, its
attenuation) through random revocations, suspensions, resumptions, ceiling
changes and epoch bumps; each check must come out as the model says, each use of
the budgeted token must count, and none may outlive a change.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capgate import Token
from capgate_client import Client

from harness import ServerThread

_round = itertools.count()
USES = 3
OPS = st.lists(
    st.sampled_from(
        [
            "unary",
            "batch",
            "stream",
            "batch",
            "revoke",
            "suspend",
            "resume",
            "narrow",
            "widen",
            "epoch",
            "reissue",
        ]
    ),
    min_size=1,
    max_size=14,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: Any) -> Any:
    s = ServerThread(tmp_path_factory.mktemp("verdicts") / "data").start()
    yield s
    s.stop()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(OPS)
def test_every_verdict_follows_the_state(server: ServerThread, ops: list[str]) -> None:
    n = next(_round)
    agent = f"a{n}"
    with server.client() as admin:
        _, cred = admin.create_agent(agent, ["read,write:/d/**"])
        svc = admin.create_principal(f"s{n}", "service").credential
        with server.client(cred) as holder, Client(server.address, svc) as service:

            def issue() -> tuple[str, str]:
                t = holder.issue("read:/d/**").token
                return t, Token.parse(t).attenuate(f"uses <= {USES}").to_text()

            plain, limited = issue()
            revoked = suspended = narrow = old_epoch = False
            left = USES
            for op in ops:
                if op in ("unary", "batch", "stream"):
                    copies = 1 if op == "unary" else 3
                    ok = not (revoked or suspended or narrow or old_epoch)
                    for token, budgeted in ((plain, False), (limited, True)):
                        if op == "unary":
                            got = [service.verify(token, "read", "/d/x", presenter=agent)]
                        elif op == "batch":
                            got = service.verify_batch(
                                [(token, "read", "/d/x", agent, None)] * copies
                            )
                        else:
                            got = list(
                                service.verify_stream(
                                    [(token, "read", "/d/x", agent, None)] * copies
                                )
                            )
                        want = [ok] * copies
                        if budgeted and ok:
                            want = [i < left for i in range(copies)]
                            left = max(0, left - copies)
                        assert [r.allowed for r in got] == want, (op, budgeted, got)
                        assert all(r.counted for r in got if budgeted and r.allowed)
                elif op == "revoke":
                    admin.revoke(plain)
                    revoked = True
                elif op == "suspend":
                    admin.suspend_agent(agent)
                    suspended = True
                elif op == "resume":
                    admin.resume_agent(agent)
                    suspended = False
                elif op == "narrow":
                    admin.update_agent(agent, grants=["write:/d/**"])
                    narrow = True
                elif op == "widen":
                    admin.update_agent(agent, grants=["read,write:/d/**"])
                    narrow = False
                elif op == "epoch":
                    admin.revoke_all(agent)
                    old_epoch = True
                elif not (suspended or narrow):  # reissue: fresh tokens, the current epoch
                    plain, limited = issue()
                    revoked = old_epoch = False
                    left = USES
