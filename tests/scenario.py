"""A synthetic fleet of agents for governance scenarios, replayed against a real server.

Four agents with their jobs (an orchestrator handing work to a summariser, a
researcher, a summariser, a billing agent), each with a ceiling wider than its
job, and a scraper nobody uses. ``Fleet.day`` replays a day in ten-minute ticks:
working hours busy, nights quiet, weekends slower, the counts of each tick drawn
at random around the agent's pace, resources drawn from its usual directories.
Each tick is one ``VerifyBatch`` by a resource service at the tick's instant (the
server's clock is the scenario's), then the audit flush and the governance pass
that follow it, so the replay does not depend on how fast this machine is.

Injections (``inject_*``) then act out what an attacker does, in real time
against the server's own background flushes, and report how many deviating
decisions were allowed and how many milliseconds passed before the agent was
contained (or flagged).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from capgate_client import Alert, Client

from harness import wait_for

DAY = 86400.0
TICK = 600.0
TTL = 9 * 86400

CEILINGS = {
    "orchestrator": ["read,write:/tasks/**", "read:/data/**"],
    "researcher": ["read:/**", "write:/notes/**"],
    "summariser": ["read:/data/**", "write,delete:/summaries/**"],
    "billing": ["read,write:/billing/**", "pay:/billing/invoices/**", "refund:/billing/**"],
    "scraper": ["read:/web/**"],
}
WORKERS = ("orchestrator", "researcher", "summariser", "billing")


def _jobs(rng: random.Random) -> dict[str, list[Callable[[], tuple[str, str, str]]]]:
    """Per agent, what one of its requests looks like: (token name, action, resource)."""
    n = lambda k: rng.randrange(k)  # noqa: E731
    return {
        "orchestrator": [
            lambda: ("orchestrator", "read", f"/tasks/queue/{n(900)}"),
            lambda: ("orchestrator", "write", f"/tasks/results/{n(900)}"),
            lambda: ("orchestrator", "read", f"/data/docs/{n(300)}"),
        ],
        "researcher": [
            lambda: ("researcher", "read", f"/data/papers/{n(2000)}"),
            lambda: ("researcher", "read", f"/web/arxiv/{n(5000)}"),
            lambda: ("researcher", "write", f"/notes/{n(50)}"),
        ],
        "summariser": [
            lambda: ("summariser", "read", f"/data/docs/{n(300)}"),
            lambda: ("delegated", "read", f"/data/docs/{n(300)}"),
            lambda: ("summariser", "write", f"/summaries/{n(900)}"),
        ],
        "billing": [
            lambda: ("billing", "read", f"/billing/accounts/{n(400)}"),
            lambda: ("billing", "write", f"/billing/invoices/{n(900)}"),
            lambda: ("billing", "pay", f"/billing/invoices/{n(900)}"),
        ],
    }


PACE = {"orchestrator": 6.0, "researcher": 4.0, "summariser": 3.0, "billing": 1.5}  # per tick


def rhythm(at: float) -> float:
    """How busy the hour is: working hours full, evenings a little, nights nearly idle."""
    hour = at % DAY / 3600
    weekend = int(at // DAY) % 7 in (5, 6)
    level = 1.0 if 8 <= hour < 18 else 0.25 if 18 <= hour < 22 else 0.03
    return level * (0.4 if weekend else 1.0)


@dataclass
class Injection:
    name: str
    flagged: bool
    contained: bool  # suspended (False where its policy only alerts)
    decisions: int  # deviating decisions until contained (``suspend``) or flagged (``alert``)
    allowed: int  # of them, how many were allowed
    ms: float  # from the first deviating decision until then
    alerts: list[Alert] = field(default_factory=list)


class Fleet:
    """The agents, their tokens, the service that verifies, on one server."""

    def __init__(
        self, address: str, admin: Client, clock: Any, *, settle: Callable[[], None], seed: int = 7
    ) -> None:
        self.address = address
        self.admin = admin
        self.clock = clock
        self.settle = settle  # flush the audit tally and run the governance pass
        self.rng = random.Random(seed)
        self.jobs = _jobs(self.rng)
        self.creds: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.start = clock()
        for name, ceiling in CEILINGS.items():
            _, self.creds[name] = admin.create_agent(name, ceiling, max_ttl=TTL)
        self.service = Client(address, admin.create_principal("docs-api", "service").credential)
        for name in CEILINGS:
            with Client(address, self.creds[name]) as c:
                self.tokens[name] = c.issue(
                    CEILINGS[name][0] if name != "researcher" else "read:/**", ttl=TTL
                ).token
        with Client(address, self.creds["orchestrator"]) as c:
            handed = c.issue("read:/data/**", ttl=TTL).token
            self.tokens["delegated"] = c.delegate(handed, "summariser").token
        self.wide = {}  # tokens with every grant of the ceiling, for the jobs' other actions
        for name in WORKERS:
            with Client(address, self.creds[name]) as c:
                self.wide[name] = [c.issue(g, ttl=TTL).token for g in CEILINGS[name]]
        self.decisions = 0

    def close(self) -> None:
        self.service.close()

    def _token(self, name: str, action: str, resource: str) -> tuple[str, str]:
        if name == "delegated":
            return self.tokens["delegated"], "summariser"
        for grant, token in zip(CEILINGS[name], self.wide[name], strict=True):
            actions, _, pattern = grant.partition(":")
            if action in actions.split(",") and resource.startswith(pattern.rstrip("*")):
                return token, name
        return self.wide[name][0], name

    def tick(self, at: float, *, routine: bool = False) -> None:
        """One ten-minute tick of normal work at instant ``at``."""
        self.clock.now = at
        items = []
        for agent in WORKERS:
            jobs = self.jobs[agent]
            if routine:  # the first morning: every kind of job once
                count, picks = len(jobs), list(jobs)
            else:
                count = _poisson(self.rng, PACE[agent] * rhythm(at - self.start))
                picks = [self.rng.choice(jobs) for _ in range(count)]
            for job in picks:
                name, action, resource = job()
                token, presenter = self._token(name, action, resource)
                items.append((token, action, resource, presenter, None))
        if routine:  # and the orchestrator's usual mistake: a write where it may only read
            items.append(
                (self.wide["orchestrator"][1], "write", "/data/docs/1", "orchestrator", None)
            )
        if items:
            self.service.verify_batch(items)
            self.decisions += len(items)
        self.settle()

    def days(self, n: int) -> None:
        first = self.clock()
        for i in range(int(n * DAY / TICK)):
            self.tick(first + i * TICK, routine=i == int(9 * 3600 / TICK))

    # -- injections ------------------------------------------------------------------

    def _until(
        self,
        name: str,
        attempt: Callable[[int], bool],
        done: Callable[[], bool],
        limit: float = 20.0,
        *,
        contains: bool = True,
    ) -> Injection:
        """Repeat one deviating decision (``attempt`` says whether it was allowed) until
        ``done``; in real time, the server's own flushes doing the work."""
        after = max((a.seq for a in self.admin.alerts(limit=1000)), default=0)
        start = time.perf_counter()
        decisions = allowed = 0
        while not done() and time.perf_counter() - start < limit:
            allowed += attempt(decisions)
            decisions += 1
        ms = (time.perf_counter() - start) * 1000
        self.settle()  # what the last decisions raised
        alerts = self.admin.alerts(after=after, limit=1000)
        return Injection(name, bool(alerts), contains and done(), decisions, allowed, ms, alerts)

    def suspended(self, agent: str) -> Callable[[], bool]:
        return lambda: self.admin.get_agent(agent).status == "suspended"

    def inject_prompt_injection(self) -> Injection:
        """The researcher, prompt-injected, reads /secrets and hands its token to the
        scraper, which reads them too."""
        with Client(self.address, self.creds["researcher"]) as c:
            handed = c.delegate(self.tokens["researcher"], "scraper").token
        token = self.tokens["researcher"]

        def attempt(i: int) -> bool:
            if i % 2:
                return self.service.verify(
                    handed, "read", f"/secrets/keys/{i}", presenter="scraper"
                ).allowed
            return self.service.verify(
                token, "read", f"/secrets/db/{i}", presenter="researcher"
            ).allowed

        return self._until("prompt-injected researcher", attempt, self.suspended("researcher"))

    def inject_leaked_token(self) -> Injection:
        """The billing agent's token, stolen, presented by someone else."""
        token = self.wide["billing"][1]

        def attempt(i: int) -> bool:
            return self.service.verify(
                token, "pay", f"/billing/invoices/{i}", presenter="intruder"
            ).allowed

        return self._until("leaked billing token", attempt, self.suspended("billing"))

    def inject_creep(self) -> Injection:
        """The summariser reaches, a resource at a time, into directories it never read."""
        token = self.tokens["summariser"]
        dirs = ["/data/hr", "/data/finance", "/data/legal"]

        def attempt(i: int) -> bool:
            self.clock.now += 60
            return self.service.verify(
                token, "read", f"{dirs[i % 3]}/{i}", presenter="summariser"
            ).allowed

        mark = max((a.seq for a in self.admin.alerts(limit=1000)), default=0)
        return self._until(
            "slow creep",
            attempt,
            lambda: bool(self.admin.alerts("summariser", after=mark)),
            contains=False,
        )

    def inject_deny_burst(self) -> Injection:
        """The orchestrator, confused or hijacked, hammers what its ceiling refuses."""
        token = self.wide["orchestrator"][1]
        mark = max((a.seq for a in self.admin.alerts(limit=1000)), default=0)

        def attempt(i: int) -> bool:
            return self.service.verify(
                token, "write", f"/data/docs/{i}", presenter="orchestrator"
            ).allowed

        return self._until(
            "deny burst",
            attempt,
            lambda: bool(self.admin.alerts("orchestrator", after=mark)),
            contains=False,
        )


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    n, p, limit = 0, 1.0, pow(2.718281828459045, -mean)
    while True:
        p *= rng.random()
        if p <= limit:
            return n
        n += 1


def contain_across(
    a_address: str, b_address: str, admin_cred: str, agent_id: str = "researcher"
) -> dict[str, float]:
    """The injected researcher of the scenario on two replicas sharing a store: its usual
    work at both, then reads of /secrets alternately at B and A until both deny.
    Returns the figures: decisions made and allowed until then, the milliseconds from
    the first deviating decision until each replica denied, the alerts raised."""
    with Client(a_address, admin_cred) as admin:
        _, cred = admin.create_agent(agent_id, ["read:/**"], max_ttl=3600)
        svc_cred = admin.create_principal(f"{agent_id}-api", "service").credential
    with Client(a_address, cred) as agent:
        token = agent.issue("read:/**", ttl=3600).token
    sa, sb = Client(a_address, svc_cred), Client(b_address, svc_cred)
    admin_a, admin_b = Client(a_address, admin_cred), Client(b_address, admin_cred)
    try:
        wait_for(
            lambda: sb.verify(token, "read", "/data/papers/0", presenter=agent_id).allowed,
            timeout=10,
        )
        for i in range(20):  # its usual work, at both replicas (learnt in its warm-up)
            for s in (sa, sb):
                assert s.verify(token, "read", f"/data/papers/{i}", presenter=agent_id).allowed
        wait_for(
            lambda: sum(u.count for u in admin_a.usage(agent_id) if u.kind == "use") >= 41,
            timeout=10,
        )
        admin_a.set_policy(agent_id, containment="suspend", warmup=0)
        wait_for(lambda: admin_b.get_policy(agent_id).containment == "suspend", timeout=15)
        start = time.perf_counter()
        decisions = allowed = 0
        denied: dict[str, float] = {}
        while len(denied) < 2 and time.perf_counter() - start < 15:
            for name, s in (("b", sb), ("a", sa)):
                ok = s.verify(token, "read", f"/secrets/db/{decisions}", presenter=agent_id).allowed
                decisions += 1
                allowed += ok
                if not ok and name not in denied:
                    denied[name] = (time.perf_counter() - start) * 1000
        alerts = admin_a.alerts(agent_id)
        return {
            "decisions": decisions,
            "allowed": allowed,
            "alerts": len(alerts),
            "contained_a_ms": denied.get("a", -1.0),
            "contained_b_ms": denied.get("b", -1.0),
            "status_a": admin_a.get_agent(agent_id).status == "suspended",
            "status_b": admin_b.get_agent(agent_id).status == "suspended",
        }
    finally:
        for c in (sa, sb, admin_a, admin_b):
            c.close()
