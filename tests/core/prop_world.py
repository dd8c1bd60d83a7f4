"""The shared world of the property tests: a fixed registry, an independent model
of the caveat language, and the hypothesis strategies that draw tokens and requests.

Every property is checked against real ``Verifier`` decisions. Where it is cheap
to do so, the model predicts the exact decision, so a caveat that is ignored, or
one that denies too much, is caught as well as one that widens.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from capgate import (
    ActionCaveat,
    Agent,
    AgentCaveat,
    BudgetCaveat,
    CaveatSyntaxError,
    Ceiling,
    CtxCaveat,
    Decision,
    DelegateCaveat,
    DenyCode,
    DepthCaveat,
    DidCaveat,
    Directory,
    ExpiresCaveat,
    MalformedTokenError,
    NotBeforeCaveat,
    Request,
    ResourceCaveat,
    RevocationSet,
    Token,
    TokenIdentifier,
    Verifier,
    append_server_delegation,
    delegate_offline,
    parse_caveat,
    public_key_id,
)

# -- the fixed world ----------------------------------------------------------------------

KEY = b"property-root-key-0123456789abcd"
KID = "k1"
NOW = 1_800_000_000.0  # the verifier's clock never moves
NOW_DEC = Decimal(int(NOW))
NOW_MS = int(NOW) * 1000
ISSUED_MS = NOW_MS - 60_000


def clock() -> float:
    return NOW


AGENT_IDS = ("a", "b", "c", "d")
ACTIONS = ("read", "write", "list", "delete")
SEGMENTS = ("data", "x", "y", "é")
CTX_KEYS = ("tool", "amount", "env.name")
CEILING_TEXT: dict[str, tuple[str, ...]] = {
    "a": ("read,write,list:/**",),
    "b": ("read,write,list,delete:/data/**", "list:/**"),
    "c": ("read:/**", "write:/data/x/**"),
    "d": ("read,write,list,delete:/**",),
}
PRIVATE = {
    name: Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"agent:" + name.encode()).digest())
    for name in AGENT_IDS
}
PUBLIC = {
    name: key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    for name, key in PRIVATE.items()
}
# Revoked delegation ids known to the shared verifier; `did = X` caveats draw from them.
REVOKED_IDS = ("aa" * 16, "0123456789abcdef" * 2)

_BASE = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def examples(n: int) -> settings:
    """Settings for a property run on ``n`` examples (no deadline, no example database)."""
    return settings(_BASE, max_examples=n)


def registry(
    ceilings: dict[str, tuple[str, ...]] | None = None, depths: dict[str, int] | None = None
) -> dict[str, Agent]:
    ceilings = ceilings or CEILING_TEXT
    return {
        name: Agent(
            name, Ceiling.parse(ceilings[name]), max_depth=(depths or {}).get(name, 3)
        ).with_changes(public_keys={public_key_id(PUBLIC[name]): PUBLIC[name]})
        for name in AGENT_IDS
    }


def revocations(ids: tuple[str, ...] = REVOKED_IDS) -> RevocationSet:
    rs = RevocationSet()
    for hex_id in ids:
        rs.add(hex_id, NOW + 86400)
    return rs


def verifier(
    agents: dict[str, Agent] | None = None,
    revoked: RevocationSet | None = None,
    memo: bool = False,
) -> Verifier:
    """A verifier on the fixed clock; ``memo``: with the decision memo the servers use."""
    agents = registry() if agents is None else agents
    return Verifier(
        {KID: KEY},
        Directory(agents) if memo and not isinstance(agents, Directory) else agents,
        revocations() if revoked is None else revoked,
        clock=clock,
        memo_size=4096 if memo else 0,
    )


VERIFIER = verifier()


def mint(holder: str, tid: str) -> Token:
    root = Token.mint(KEY, TokenIdentifier(KID, tid, ISSUED_MS).encode())
    return root.attenuate(f"agent = {holder}")


def hop(token: Token, holder: str, to: str, offline: bool, n: int) -> tuple[Token, str]:
    """Delegate from ``holder`` to ``to`` (server-minted or signed offline)."""
    at_ms = ISSUED_MS + 1000 * n
    if offline:
        return delegate_offline(token, PRIVATE[holder], to, at_ms)
    return append_server_delegation(token, KEY, to, at_ms)


def presenting(req: Request, presenter: str | None) -> Request:
    """The same request made by ``presenter``."""
    return Request(req.action, req.resource, presenter, req.ctx)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decide(v: Verifier, token: Token | str, req: Request) -> Decision:
    """A real decision; whatever the input, it is a Decision and never an exception."""
    text = token if isinstance(token, str) else token.to_text()
    d = v.verify(text, req)
    assert isinstance(d, Decision)
    assert d.allowed == (d.code is DenyCode.ALLOWED), d
    if not req.ctx:  # the servers' field-by-field entry point agrees
        again = v.check(text, req.action, req.resource, req.presenter)
        assert (again.allowed, again.code) == (d.allowed, d.code), (d, again)
    return d


def parse_or_none(text: str | bytes) -> Token | None:
    """``Token.parse``: a Token or ``MalformedTokenError``; any other exception fails."""
    try:
        t = Token.parse(text)
    except MalformedTokenError:
        return None
    assert isinstance(t, Token)
    return t


# -- an independent model of the caveat language -------------------------------------------

_NUMBER = re.compile(r"-?[0-9]{1,18}(?:\.[0-9]{1,18})?")


def glob_match(pattern: list[str] | tuple[str, ...], segs: list[str] | tuple[str, ...]) -> bool:
    """``*`` is exactly one segment, ``**`` any number of segments (none included)."""
    if not pattern:
        return not segs
    head = pattern[0]
    if head == "**":
        return glob_match(pattern[1:], segs) or (bool(segs) and glob_match(pattern, segs[1:]))
    if not segs:
        return False
    return (head == "*" or head == segs[0]) and glob_match(pattern[1:], segs[1:])


def path_segments(path: str) -> list[str]:
    return path[1:].split("/")


def model_grant_allows(grant: str, action: str, resource: str) -> bool:
    actions, _, glob = grant.partition(":")
    return action in actions.split(",") and glob_match(path_segments(glob), path_segments(resource))


def model_ceiling_allows(grants: tuple[str, ...], action: str, resource: str) -> bool:
    return any(model_grant_allows(g, action, resource) for g in grants)


def numeric(value: str | None) -> Decimal | None:
    if value is None or _NUMBER.fullmatch(value) is None:
        return None
    return Decimal(value)


Holds = Callable[[Request, str], bool]  # (request, holder at the caveat's position) -> holds


@dataclass(frozen=True)
class Cav:
    """A caveat as generated: its kind, its bytes and what the model says it means."""

    kind: str
    text: str | bytes
    holds: Holds = field(repr=False, compare=False)
    depth: int | None = None  # for `depth <= n`: n
    did: str | None = None  # for `did = X`: X

    @property
    def raw(self) -> bytes:
        return self.text if isinstance(self.text, bytes) else self.text.encode("utf-8")


def _never(r: Request, h: str) -> bool:
    return False


def _always(r: Request, h: str) -> bool:
    return True


# -- strategies -----------------------------------------------------------------------------

hex32 = st.binary(min_size=16, max_size=16).map(bytes.hex)
hex16 = st.binary(min_size=8, max_size=8).map(bytes.hex)
resources = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map(
    lambda segs: "/" + "/".join(segs)
)
# the grammar allows at most two '**' in a glob (matching must stay polynomial)
random_globs = st.lists(st.sampled_from((*SEGMENTS, "*", "**")), min_size=1, max_size=4).filter(
    lambda segs: segs.count("**") <= 2
)
WORDS = ("x", "y", "a,b", "é", "search")
numbers = st.builds(
    lambda sign, whole, frac: f"{sign}{whole}{'.' + frac if frac else ''}",
    st.sampled_from(("", "-")),
    st.integers(0, 20),
    st.none() | st.text("0123456789", min_size=1, max_size=4),
)
number_texts = st.sampled_from(("5", "5.0", "05", "-2", "0", "-0", "10", "7.25")) | numbers
# Request values that look numeric to a person but not to the grammar.
ODD_NUMBERS = ("1e3", "+5", ".5", "5.", "٥", "0x10", "NaN", "Infinity")
ctx_values = st.sampled_from(WORDS) | number_texts | st.sampled_from(ODD_NUMBERS)
requests = st.builds(
    Request,
    action=st.sampled_from(ACTIONS),
    resource=resources,
    presenter=st.none(),
    ctx=st.dictionaries(st.sampled_from(CTX_KEYS), ctx_values, max_size=3),
)

# (suffix, minutes east of UTC): every offset form the RFC 3339 grammar has.
OFFSETS = (
    ("Z", 0),
    ("+00:00", 0),
    ("-00:00", 0),
    ("+05:30", 330),
    ("-08:00", -480),
    ("+14:00", 840),
    ("-23:59", -1439),
    ("+23:59", 1439),
)


FIRST_UTC = Decimal(calendar.timegm((1, 1, 1, 0, 0, 0, 0, 0, 0)))
LAST_UTC = Decimal(calendar.timegm((9999, 12, 31, 23, 59, 59, 0, 0, 0)))


@st.composite
def instants(draw: st.DrawFn) -> tuple[str, Decimal]:
    """An RFC 3339 instant as text, and its exact Unix time computed independently."""
    suffix, minutes = draw(st.sampled_from(OFFSETS))
    where = draw(st.integers(0, 4))
    if where:  # mostly at or near the fixed clock, where the outcome flips
        if where == 1:  # exactly now: neither `expires <` nor `not-before >` holds
            delta = 0
            digits = draw(st.none() | st.sampled_from(("0", "000", "000000000")))
        else:
            # either side of "now", with the later side drawn as often as the earlier one
            # is met (a base token that allows already holds many instants in the past)
            delta = draw(
                st.sampled_from((-1, 0, 1, -60, 60, -86400, 86400))
                | st.integers(-(10**9), 10**9)
                | st.integers(1, 10**9)
            )
            # Close to the clock only millisecond fractions, so float rounding cannot blur
            # which side of "now" the instant lies.
            digits = draw(
                st.none() | st.text("0123456789", min_size=1, max_size=3 if abs(delta) <= 1 else 9)
            )
        local = datetime(1970, 1, 1) + timedelta(seconds=int(NOW) + delta + minutes * 60)
        fields = (local.year, local.month, local.day, local.hour, local.minute, local.second)
        exact = NOW_DEC + delta
    else:  # anywhere in years 1-9999
        if draw(st.booleans()):  # the first and last instants of the grammar's years
            fields = draw(st.sampled_from(((1, 1, 1, 0, 0, 0), (9999, 12, 31, 23, 59, 59))))
        else:
            year, month = draw(st.integers(1, 9999)), draw(st.integers(1, 12))
            day = draw(st.integers(1, calendar.monthrange(year, month)[1]))
            fields = (
                year, month, day, draw(st.integers(0, 23)), draw(st.integers(0, 59)),
                draw(st.integers(0, 59)),
            )  # fmt: skip
        digits = draw(st.none() | st.text("0123456789", min_size=1, max_size=9))
        exact = Decimal(calendar.timegm((*fields, 0, 0, 0))) - minutes * 60
        if not FIRST_UTC <= exact <= LAST_UTC:  # the grammar wants years 1-9999 in UTC
            suffix, minutes = "Z", 0
            exact = Decimal(calendar.timegm((*fields, 0, 0, 0)))
    if digits:
        exact += Decimal("0." + digits)
    y, mo, d, h, mi, s = fields
    frac = "." + digits if digits else ""
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{suffix}", exact


@st.composite
def derived_glob(draw: st.DrawFn, resource: str) -> list[str]:
    """A glob that matches ``resource``: some segments starred, maybe a run as ``**``."""
    segs = path_segments(resource)
    out = [s if draw(st.booleans()) else "*" for s in segs]
    if draw(st.booleans()):
        i = draw(st.integers(0, len(out)))
        j = draw(st.integers(i, len(out)))
        out[i:j] = ["**"]
    return out


KNOWN_KEYS = {
    "agent",
    "action",
    "resource",
    "expires",
    "not-before",
    "ctx",
    "did",
    "depth",
    "delegate",
}
unknown_key_caveats = st.sampled_from(
    (
        "use <= 3",
        "rates <= 5/m",
        "color = red",
        "Agent = a",
        "ACTION in read",
        "scope in read",
        "time < 2030-01-01T00:00:00Z",
        "expiry < 2030-01-01T00:00:00Z",
    )
) | st.builds(
    lambda k, op, v: f"{k} {op} {v}",
    st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=10).filter(
        lambda k: k not in KNOWN_KEYS
    ),
    st.sampled_from(("=", "in", "<", ">", "<=", ">=")),
    st.sampled_from(("1", "x", "a,b", "read")),
)
NEAR_MISSES = (
    "",
    "uses <= 0",
    "uses <= -1",
    "uses < 3",
    "uses <= 3.5",
    "rate <= 5",
    "rate <= 0/1m",
    "rate <= 5/0s",
    "rate <= 5/1w",
    "rate <= 5/-1m",
    "agent",
    "agent =",
    "agent = ",
    "agent = -a",
    "agent = a b",
    "agent == a",
    "action in",
    "action in read,",
    "action in ,read",
    "action = read",
    "action in re ad",
    "resource",
    "resource data/x",
    "resource /data//x",
    "resource /da*ta",
    "resource /data/../x",
    "resource /data/./x",
    "resource /data/x/",
    "resource = /data",
    "resource /e\u0301",  # not NFC
    "expires < tomorrow",
    "expires < 2027-02-30T00:00:00Z",
    "expires < 2027-01-01T24:00:00Z",
    "expires < 2027-01-01 00:00:00Z",
    "expires < 2027-01-01T00:00:00",
    "expires < 2027-01-01T00:00:00.Z",
    "expires < 2027-01-01T00:00:00+24:00",
    "expires < 2027-01-01T00:00:00+0100",
    "expires > 2027-01-01T00:00:00Z",
    "expires <= 2027-01-01T00:00:00Z",
    "expires < 1800000000",
    "not-before < 2020-01-01T00:00:00Z",
    "not-before > 2020-13-01T00:00:00Z",
    "ctx",
    "ctx tool",
    "ctx tool =",
    "ctx Tool = x",
    "ctx 1tool = x",
    "ctx tool == x",
    "ctx tool != x",
    "ctx tool < x",
    "ctx tool =< 5",
    "ctx tool <> 5",
    "ctx tool <= x",
    "ctx tool >= 1e3",
    "ctx tool <= +5",
    "ctx tool in a,,b",
    "ctx tool in ,a",
    "ctx tool = a b",
    "did = " + "A" * 32,
    "did = abc",
    "did = " + "g" * 32,
    "did " + "a" * 32,
    "depth <= 100",
    "depth <= -1",
    "depth < 3",
    "depth <= three",
    "delegate = b",
    "delegate = b did=" + "a" * 32 + " at=1 proof=srv:short",
)


def _mutations(text: str) -> list[str]:
    """Ways to break a valid caveat's text that a lax parser might let through."""
    words = text.split(" ")
    return [
        text.replace(" ", "  ", 1),
        " " + text,
        text + " ",
        text.replace(" ", "\t", 1),
        text.replace(" ", "\u00a0", 1),
        text.replace(" ", " \u200b", 1),
        text + "\u200b",
        text + "\n",
        text.upper(),
        " ".join(words[:-1]),
    ]


CHECK_KINDS = (
    "action",
    "resource",
    "expires",
    "not-before",
    "ctx-eq",
    "ctx-in",
    "ctx-le",
    "ctx-ge",
    "ctx-lt",
    "ctx-gt",
)
NUMERIC_CTX = {"ctx-le": "<=", "ctx-ge": ">=", "ctx-lt": "<", "ctx-gt": ">"}
VALID_KINDS = ("agent", *CHECK_KINDS, "did", "depth")
# A budget needs a counter: the core verifier here keeps none, so it refuses them
# (tests/server/test_budgets.py has the property with one).
UNCOUNTED_KINDS = ("budget",)
INVALID_KINDS = ("delegate-bogus", "unknown-key", "malformed", "garbage-text", "garbage-bytes")
ALL_KINDS = VALID_KINDS + UNCOUNTED_KINDS + INVALID_KINDS
EXPECTED_CLASS = {
    "agent": AgentCaveat,
    "action": ActionCaveat,
    "resource": ResourceCaveat,
    "expires": ExpiresCaveat,
    "not-before": NotBeforeCaveat,
    "ctx-eq": CtxCaveat,
    "ctx-in": CtxCaveat,
    "ctx-le": CtxCaveat,
    "ctx-ge": CtxCaveat,
    "ctx-lt": CtxCaveat,
    "ctx-gt": CtxCaveat,
    "did": DidCaveat,
    "depth": DepthCaveat,
    "delegate-bogus": DelegateCaveat,  # well formed; only its proof is wrong
    "budget": BudgetCaveat,
}


@st.composite
def caveats(draw: st.DrawFn, kind: str, req: Request, holder: str) -> Cav:
    """A caveat of ``kind``; often shaped to hold for ``req`` and ``holder``."""
    fit = draw(st.integers(0, 2)) > 0
    if kind == "agent":
        who = holder if fit else draw(st.sampled_from((*AGENT_IDS, "zed")))
        return Cav(kind, f"agent = {who}", lambda r, h: h == who)
    if kind == "action":
        names = draw(
            st.lists(
                st.sampled_from((*ACTIONS, "admin", "Read", "read.all")), min_size=1, max_size=3
            )
        )
        if fit:
            names = draw(st.permutations([*names, req.action]))
        allowed = frozenset(names)
        return Cav(kind, "action in " + ",".join(names), lambda r, h: r.action in allowed)
    if kind == "resource":
        segs = draw(derived_glob(req.resource) if fit else random_globs)
        return Cav(
            kind,
            "resource /" + "/".join(segs),
            lambda r, h: glob_match(segs, path_segments(r.resource)),
        )
    if kind == "expires":
        text, at = draw(instants())
        return Cav(kind, f"expires < {text}", lambda r, h: NOW_DEC < at)
    if kind == "not-before":
        text, at = draw(instants())
        return Cav(kind, f"not-before > {text}", lambda r, h: NOW_DEC > at)
    if kind.startswith("ctx-"):
        if fit and req.ctx:
            key = draw(st.sampled_from(sorted(req.ctx)))
        else:
            key = draw(st.sampled_from(CTX_KEYS))
        current = req.ctx.get(key) if fit else None
        if kind == "ctx-eq":
            value = current if current is not None else draw(st.sampled_from(WORDS) | number_texts)
            return Cav(kind, f"ctx {key} = {value}", lambda r, h: r.ctx.get(key) == value)
        if kind == "ctx-in":
            vals = draw(
                st.lists(
                    st.sampled_from(("x", "y", "é", "search")) | number_texts,
                    min_size=1,
                    max_size=3,
                )
            )
            if current is not None and "," not in current:
                vals = draw(st.permutations([*vals, current]))
            one_of = frozenset(vals)
            return Cav(
                kind, f"ctx {key} in {','.join(vals)}", lambda r, h: r.ctx.get(key) in one_of
            )
        bound_text = current if numeric(current) is not None else draw(number_texts)
        op = NUMERIC_CTX[kind]
        if op in ("<", ">") and numeric(current) is not None and draw(st.integers(0, 3)):
            # strict: a bound a step past the value holds, the value itself does not
            step = draw(st.sampled_from(("1", "0.001", "1", "0")))
            moved = numeric(current) + (Decimal(step) if op == "<" else -Decimal(step))
            if numeric(str(moved)) is not None:
                bound_text = str(moved)
        bound = Decimal(bound_text)
        compare = {
            "<=": Decimal.__le__,
            ">=": Decimal.__ge__,
            "<": Decimal.__lt__,
            ">": Decimal.__gt__,
        }[op]

        def holds(r: Request, h: str) -> bool:
            n = numeric(r.ctx.get(key))
            return n is not None and compare(n, bound)

        return Cav(kind, f"ctx {key} {op} {bound_text}", holds)
    if kind == "did":
        did = draw(hex32) if fit else draw(st.sampled_from(REVOKED_IDS) | hex32)
        return Cav(kind, f"did = {did}", lambda r, h: did not in REVOKED_IDS, did=did)
    if kind == "depth":
        n = draw(st.integers(0, 4) | st.integers(0, 99))
        return Cav(kind, f"depth <= {n}", _always, depth=n)
    if kind == "delegate-bogus":
        to = draw(st.sampled_from(AGENT_IDS))
        head = f"delegate = {to} did={draw(hex32)} at={draw(st.integers(ISSUED_MS + 1, NOW_MS))}"
        if draw(st.booleans()):
            proof = "srv:" + b64(draw(st.binary(min_size=32, max_size=32)))
        else:
            kid = draw(st.sampled_from([public_key_id(p) for p in PUBLIC.values()]) | hex16)
            proof = f"ed25519:{kid}:" + b64(draw(st.binary(min_size=64, max_size=64)))
        return Cav(kind, f"{head} proof={proof}", _never)
    if kind == "budget":
        n = draw(st.integers(1, 10**6))
        text = draw(st.sampled_from((f"uses <= {n}", f"rate <= {n}/1m", f"rate <= {n}/s")))
        return Cav(kind, text, _never)
    if kind == "unknown-key":
        return Cav(kind, draw(unknown_key_caveats), _never)
    if kind == "malformed":
        if draw(st.booleans()):
            return Cav(kind, draw(st.sampled_from(NEAR_MISSES)), _never)
        base = draw(caveats(draw(st.sampled_from(VALID_KINDS)), req, holder))
        assert isinstance(base.text, str)
        return Cav(kind, draw(st.sampled_from(_mutations(base.text))), _never)
    if kind == "garbage-text":
        return Cav(kind, draw(st.text(max_size=40)), _never)
    if kind == "garbage-bytes":
        return Cav(kind, draw(st.binary(max_size=40)), _never)
    raise AssertionError(kind)


def grammar_class(cav: Cav) -> type | None:
    """The parsed caveat's class, or None when the grammar refuses it."""
    try:
        text = cav.raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        return type(parse_caveat(text))
    except CaveatSyntaxError:
        return None


# -- chains that are allowed, for tampering, revocation and proof tests ---------------------


@dataclass
class Stage:
    token: Token
    holder: str
    lineage: tuple[str, ...]  # token id, then every did, in order
    delegation: str | None = None  # the `delegate` caveat that began this stage


@dataclass
class AllowedChain:
    stages: list[Stage]
    req: Request  # presenter: the final holder

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def request_for(self, stage: Stage) -> Request:
        return presenting(self.req, stage.holder)


@st.composite
def allowed_chains(draw: st.DrawFn, min_hops: int = 0, max_hops: int = 3) -> AllowedChain:
    """A token delegated through 0-3 hops (server and offline mixed) that allows ``req``."""
    req = draw(requests)
    fit = [a for a in AGENT_IDS if model_ceiling_allows(CEILING_TEXT[a], req.action, req.resource)]
    holder = draw(st.sampled_from(fit))
    tid = draw(hex32)
    token = mint(holder, tid)
    lineage = [tid]
    stages: list[Stage] = []
    for n in range(draw(st.integers(min_hops, max_hops)) + 1):
        delegation = None
        if n:
            to = draw(st.sampled_from(fit))
            token, did = hop(token, holder, to, draw(st.booleans()), n)
            holder, delegation = to, token.caveats[-1]
            lineage.append(did)
        for kind in draw(st.lists(st.sampled_from((*CHECK_KINDS, "agent", "did")), max_size=2)):
            cav = draw(caveats(kind, req, holder))
            if cav.holds(req, holder) and cav.did not in lineage:  # an id names one hop
                token = token.attenuate(cav.text)  # type: ignore[arg-type]
                if cav.did is not None:
                    lineage.append(cav.did)
        stages.append(Stage(token, holder, tuple(lineage), delegation))
    chain = AllowedChain(stages, presenting(req, holder))
    for stage in stages:  # every prefix allows the request for its own holder
        assert decide(VERIFIER, stage.token, chain.request_for(stage)).allowed
    return chain


def location_span(token: Token) -> range:
    """Byte positions of the (unsigned) location value in the V2 form."""
    data = token.to_bytes()
    assert data[1] == 1  # LOCATION field first
    return range(3, 3 + data[2])
