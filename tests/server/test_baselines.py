"""Deviation detection and access review as pure functions of what agents did.

Pins: a steady agent raises nothing after its warm-up; a first-seen prefix, a new
sub-agent, a deeper chain and a new presenter each raise one deviation with a reason
a person can read; a burst of calls or denies against the agent's own pace is flagged
while a quiet night followed by a busy morning is not; sensitivity scales it. Review:
unused grants are dropped, grants used on a narrow part narrowed, and (a property) a
proposed ceiling never allows what the old one did not, and still allows everything
that was used.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from capgate import Agent, Ceiling, Grant
from capgate_server._baselines import Baselines
from capgate_server._review import review
from capgate_server.store import AuditEvent, GovernancePolicy, UsageKind, UsageRow

T0 = 1_800_000_000.0
DAY = 86400.0


def verify(
    at: float,
    resource: str,
    *,
    chain: tuple[str, ...] = ("res",),
    ok: bool = True,
    action: str = "read",
    presenter: str = "",
    count: int = 1,
) -> AuditEvent:
    return AuditEvent(
        at,
        "svc",
        "verify",
        "t",
        ok,
        "allowed" if ok else "beyond_ceiling",
        chain=chain,
        action=action,
        resource=resource,
        presenter=presenter or chain[-1],
        count=count,
        last_at=at,
    )


def policy(agent: str, sensitivity: float = 1.0) -> GovernancePolicy:
    return GovernancePolicy(agent, sensitivity=sensitivity)


def after_day(agent: str, at: float, p: GovernancePolicy) -> bool:
    return at - T0 >= DAY


def steady(b: Baselines, days: int, rng: random.Random, **kw: object) -> list:
    found = []
    for minute in range(days * 24 * 60 // 10):
        at = T0 + minute * 600
        if 8 <= (at - T0) / 3600 % 24 < 18:  # working hours only
            events = [
                verify(at, f"/data/papers/p{rng.randrange(500)}")
                for _ in range(rng.randrange(3, 15))
            ]
            found += b.observe(events, policy, after_day)
    return found


def test_a_steady_agent_raises_nothing_after_its_warm_up():
    assert steady(Baselines(), 4, random.Random(1)) == []


def test_first_seen_prefix_raises_one_deviation_with_a_reason():
    b = Baselines()
    steady(b, 2, random.Random(2))
    at = T0 + 2 * DAY + 3600
    found = b.observe([verify(at, "/secrets/db"), verify(at, "/secrets/api")], policy, after_day)
    assert [(d.kind, d.key, d.reason) for d in found] == [
        (
            "new-resource",
            "res|new-resource|read|/secrets",
            "res read /secrets/** for the first time",
        )
    ]
    assert b.observe([verify(at + 1, "/secrets/db")], policy, after_day) == []


def test_nothing_is_news_during_the_warm_up():
    b = Baselines()
    assert b.observe([verify(T0 + 10, "/secrets/db")], policy, after_day) == []


def test_new_delegate_deeper_chain_and_new_presenter():
    b = Baselines()
    b.observe([verify(T0, "/data/x", chain=("orch", "sum"))], policy, after_day)
    at = T0 + 2 * DAY
    found = b.observe(
        [
            verify(at, "/data/x", chain=("orch", "sum", "scribe")),
            verify(at, "/data/x", chain=("orch",), presenter="intruder", ok=False),
        ],
        policy,
        after_day,
    )
    kinds = {(d.agent, d.kind) for d in found}
    assert ("orch", "depth") in kinds and ("sum", "new-delegate") in kinds
    assert ("orch", "new-presenter") in kinds
    leaked = next(d for d in found if d.kind == "new-presenter")
    assert leaked.reason == "a token of orch was presented by intruder for the first time"


def test_bursts_of_calls_and_denies_against_its_own_pace():
    b = Baselines()
    rng = random.Random(3)
    steady(b, 2, rng)
    at = T0 + 2 * DAY + 9 * 3600
    denies = b.observe([verify(at, "/data/papers/x", ok=False, count=37)], policy, after_day)
    assert [d.kind for d in denies] == ["denies"]
    assert denies[0].reason.startswith("res: 37 denied calls in 10 s")
    calls = b.observe([verify(at + 60, f"/data/papers/{i}") for i in range(120)], policy, after_day)
    assert [d.kind for d in calls] == ["rate"]


def test_sensitivity_scales_what_is_a_burst():
    def burst(sensitivity: float) -> list:
        b = Baselines()
        steady(b, 2, random.Random(4))
        at = T0 + 2 * DAY + 9 * 3600
        return b.observe(
            [verify(at, "/data/papers/x", count=35)], lambda a: policy(a, sensitivity), after_day
        )

    assert burst(1.0) and not burst(0.5)


def use(resource: str, count: int = 1, action: str = "read") -> UsageRow:
    return UsageRow("res", UsageKind.USE, action, resource, count, T0, T0 + 10)


def agent(*grants: str, max_depth: int = 3) -> Agent:
    return Agent(id="res", ceiling=Ceiling.parse(grants), max_depth=max_depth, created_at=T0)


def test_review_drops_unused_grants_and_narrows_broad_ones():
    r = review(
        agent("read,write:/**", "admin:/admin/**"),
        [
            use("/data/reports/2026/a.csv", 5),
            use("/data/reports/2026/b.csv", 2),
            use("/web/news/today", 1),
        ],
    )
    assert r.proposed == ("read:/data/reports/2026/**", "read:/web/news/**")
    assert [g.proposed for g in r.grants] == [r.proposed, ()]
    assert r.uses == 8 and not r.idle and r.changes
    assert r.proposed_max_depth == 0


def test_review_of_an_idle_agent_keeps_its_ceiling_and_says_so():
    r = review(agent("read:/data/**"), [])
    assert r.idle and r.proposed == ("read:/data/**",)


def test_review_keeps_a_grant_that_fits():
    r = review(
        agent("read:/data/reports/**", max_depth=0),
        [use("/data/reports/a"), use("/data/reports/b")],
    )
    assert r.proposed == ("read:/data/reports/**",) and not r.changes


SEG = st.sampled_from(["data", "web", "reports", "2026", "a", "b", "c.csv"])
PATH = st.lists(SEG, min_size=1, max_size=5).map(lambda s: "/" + "/".join(s))
GRANT = st.tuples(
    st.sets(st.sampled_from(["read", "write"]), min_size=1),
    st.lists(st.sampled_from(["data", "web", "*", "reports"]), max_size=2),
    st.sampled_from(["/**", "/*", ""]),
).map(
    lambda g: (
        f"{','.join(sorted(g[0]))}:/{'/'.join(g[1])}{g[2]}".replace("//", "/").rstrip(":")
        if g[1] or g[2]
        else f"{','.join(sorted(g[0]))}:/**"
    )
)


@settings(max_examples=300, deadline=None)
@given(
    grants=st.lists(GRANT, min_size=1, max_size=3),
    used=st.lists(st.tuples(st.sampled_from(["read", "write"]), PATH), max_size=12),
)
def test_a_proposed_ceiling_never_widens_and_keeps_what_was_used(grants, used):
    try:
        original = agent(*grants)
    except Exception:
        return  # a pattern the strategy made that the grammar refuses
    rows = [use(r, 1, a) for a, r in used if original.ceiling.allows(a, r)]
    r = review(original, rows)
    for p in r.proposed:
        assert original.ceiling.covers(Grant.parse(p)), (p, grants)
    proposed = Ceiling.parse(r.proposed)
    for row in rows:
        assert proposed.allows(row.action, row.subject), (row, r.proposed)
