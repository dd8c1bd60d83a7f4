"""One suite for the ``Store`` contract, run unchanged against SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from capgate import (
    Agent,
    AgentStatus,
    AlreadyExistsError,
    Ceiling,
    NotFoundError,
    UnavailableError,
)
from capgate_server.store import (
    MIGRATIONS,
    AuditEvent,
    AuditQuery,
    Change,
    ChangeKind,
    DelegationRecord,
    LedgerKey,
    PostgresStore,
    Principal,
    Role,
    RootKeyRecord,
    SqliteStore,
    Store,
    TokenRecord,
    open_store,
    walk,
)

T0 = 1_800_000_000.0
P0 = 1_600_000_000.0  # earlier than any store's clock: pruning by it is not held back


# -- fixtures ------------------------------------------------------------------------


class Backend:
    """Opens store objects on one database and reads it with a separate raw connection."""

    def __init__(self, name: str, location: str | Path, factory: Callable[[], Store]) -> None:
        self.name = name
        self.location = location
        self._factory = factory
        self._opened: list[Store] = []

    def open(self) -> Store:
        s = self._factory()
        self._opened.append(s)
        return s

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        if self.name == "sqlite":
            conn = sqlite3.connect(str(self.location))
            try:
                return [tuple(r) for r in conn.execute(sql, params).fetchall()]
            finally:
                conn.close()
        with psycopg.connect(str(self.location), autocommit=True) as conn:
            return [tuple(r) for r in conn.execute(sql.replace("?", "%s"), params).fetchall()]

    def close_all(self) -> None:
        for s in self._opened:
            s.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "s.db"
        b = Backend("sqlite", path, lambda: SqliteStore(path))
    else:
        url = request.getfixturevalue("pg_url")
        b = Backend("postgres", url, lambda: PostgresStore(url))
    try:
        yield b
    finally:
        b.close_all()


@pytest.fixture
def store(backend: Backend) -> Store:
    s = backend.open()
    s.migrate()
    return s


# -- helpers -------------------------------------------------------------------------


LEDGER = LedgerKey.generate()
SIGN = LEDGER.sign


def ev(kind: str = "test", principal: str = "admin", at: float = T0, **kw: object) -> AuditEvent:
    return AuditEvent(at=at, principal=principal, kind=kind, **kw)  # type: ignore[arg-type]


def stored(e: AuditEvent) -> AuditEvent:
    """What ``list_audit`` returns for ``e``, minus the seq the store assigns."""
    return dataclasses.replace(e, seq=0, last_at=e.at if e.last_at is None else e.last_at)


def unseq(events: list[AuditEvent]) -> list[AuditEvent]:
    return [dataclasses.replace(e, seq=0) for e in events]


def key(n: int) -> bytes:
    return bytes((n + i) % 256 for i in range(32))


def make_agent(agent_id: str = "alice", **kw: object) -> Agent:
    base = Agent(
        id=agent_id,
        ceiling=Ceiling.parse(["read,write:/data/**", "list:/data/*"]),
        owner="ops",
        description="an agent",
        max_ttl=900,
        max_depth=2,
        created_at=T0,
    ).with_changes(public_keys={"k1": key(1), "k2": key(2)})
    return base.with_changes(**kw) if kw else base


def token(tid: str = "t1", **kw: object) -> TokenRecord:
    fields: dict[str, object] = dict(
        id=tid,
        agent="alice",
        key_id="rk1",
        issued_at=T0,
        expires_at=T0 + 600,
        caveats=("action = read",),
    )
    fields.update(kw)
    return TokenRecord(**fields)  # type: ignore[arg-type]


def hop(
    did: str, at: float, *, token_id: str = "t1", parent: str = "t1", **kw: object
) -> DelegationRecord:
    fields: dict[str, object] = dict(
        id=did,
        token_id=token_id,
        parent=parent,
        from_agent="alice",
        to_agent="bob",
        at=at,
        expires_at=at + 60,
        offline=False,
    )
    fields.update(kw)
    return DelegationRecord(**fields)  # type: ignore[arg-type]


def kinds_keys(changes: list[Change]) -> list[tuple[ChangeKind, str, float | None]]:
    return [(c.kind, c.key, c.value) for c in changes]


# -- lifecycle -----------------------------------------------------------------------


def test_migrate_is_idempotent(backend: Backend, store: Store) -> None:
    store.create_principal(Principal("svc", Role.SERVICE, T0), "h-svc")
    store.migrate()
    store.migrate()
    assert store.get_principal("svc") == Principal("svc", Role.SERVICE, T0)
    versions = backend.query("SELECT version FROM schema_version ORDER BY version")
    assert versions == [(v,) for v in range(1, len(MIGRATIONS) + 1)]
    # a second object migrating the same database changes nothing either
    other = backend.open()
    other.migrate()
    assert backend.query("SELECT version FROM schema_version ORDER BY version") == versions


def test_second_store_object_sees_the_same_data(backend: Backend, store: Store) -> None:
    store.create_principal(Principal("svc", Role.SERVICE, T0), "h-svc", ev("principal.create"))
    store.create_agent(make_agent(), "h-alice", ev("agent.create", subject="alice"))
    store.add_root_key(RootKeyRecord("rk1", b"\x00sealed\xff", T0))
    store.record_token(token(), ev("issue", subject="t1"))
    assert store.revoke("t1", T0, T0 + 600, "admin", "gone", ev("revoke", subject="t1"))

    other = backend.open()
    other.migrate()
    assert other.principal_by_credential("h-svc") == Principal("svc", Role.SERVICE, T0)
    assert other.get_agent("alice") == make_agent()
    assert other.root_keys() == store.root_keys()
    assert other.get_token("t1") == token()
    assert other.revocations(T0) == [("t1", T0 + 600)]
    assert other.last_change() == store.last_change() > 0
    assert other.changes_since(0) == store.changes_since(0)
    assert other.list_audit(AuditQuery()) == store.list_audit(AuditQuery())

    # and writes through the second object are visible through the first
    assert other.revoke("t2", T0, T0 + 600, "admin", "", ev("revoke", subject="t2"))
    assert sorted(store.revocations(T0)) == [("t1", T0 + 600), ("t2", T0 + 600)]
    assert store.last_change() == other.last_change()


def test_racing_revocations_of_one_id_both_succeed(backend: Backend, store: Store) -> None:
    """Two replicas revoke the same id at the same moment: exactly one is the first, the
    other finds it revoked (and may extend its life); neither gets an error."""
    stores = [store, backend.open()]
    for n in range(20):
        barrier = threading.Barrier(2)
        results: list[object] = []

        def revoke(s: Store, expires: float, lid: str = f"race-{n}") -> None:
            barrier.wait()
            try:
                results.append(s.revoke(lid, T0, expires, "admin", "", ev("revoke", subject=lid)))
            except BaseException as e:
                results.append(e)

        threads = [
            threading.Thread(target=revoke, args=(s, T0 + 600 + 60 * i))
            for i, s in enumerate(stores)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results, key=str) == [False, True], results
        assert dict(store.revocations(T0))[f"race-{n}"] == T0 + 660  # the longer life kept


def test_racing_migrations_on_a_fresh_database(backend: Backend) -> None:
    stores = [backend.open(), backend.open()]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def run(s: Store) -> None:
        try:
            barrier.wait(timeout=10)
            s.migrate()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    rows = backend.query(
        "SELECT version, COUNT(*) FROM schema_version GROUP BY version ORDER BY version"
    )
    assert rows == [(v, 1) for v in range(1, len(MIGRATIONS) + 1)]
    # both objects work on the migrated schema
    stores[0].create_principal(Principal("p", Role.SERVICE, T0), "h-p")
    assert stores[1].get_principal("p") == Principal("p", Role.SERVICE, T0)


def test_ping(store: Store) -> None:
    store.ping()


@pytest.mark.postgres
def test_postgres_unreachable_raises_unavailable() -> None:
    with pytest.raises(UnavailableError):
        PostgresStore("postgresql://postgres@127.0.0.1:1/test", connect_timeout=2)


@pytest.mark.postgres
def test_open_store_picks_the_backend(tmp_path: Path, pg_url: str) -> None:
    s = open_store(f"sqlite:///{tmp_path / 'o.db'}", tmp_path)
    try:
        assert isinstance(s, SqliteStore)
        s.migrate()
        s.ping()
    finally:
        s.close()
    p = open_store(pg_url, tmp_path)
    try:
        assert isinstance(p, PostgresStore)
        p.migrate()
        p.ping()
    finally:
        p.close()


# -- principals ----------------------------------------------------------------------


def test_principals(store: Store) -> None:
    admin = Principal("admin", Role.ADMIN, T0)
    svc = Principal("svc", Role.SERVICE, T0 + 1.5)
    store.create_principal(admin, "h-admin")
    store.create_principal(svc, "h-svc")

    assert store.principal_by_credential("h-admin") == admin
    assert store.principal_by_credential("h-svc") == svc
    assert store.get_principal("svc") == svc
    got = store.get_principal("admin")
    assert got is not None and got.role is Role.ADMIN
    assert store.principal_by_credential("h-nope") is None
    assert store.get_principal("nope") is None

    before = store.last_change()
    with pytest.raises(AlreadyExistsError):
        store.create_principal(
            Principal("svc", Role.ADMIN, T0), "h-other", ev("principal.create", subject="svc")
        )
    # the failed create changed nothing
    assert store.get_principal("svc") == svc
    assert store.principal_by_credential("h-other") is None
    assert store.last_change() == before
    assert store.list_audit(AuditQuery(kind="principal.create")) == []


def test_principals_are_listed_disabled_and_given_new_credentials(store: Store) -> None:
    store.create_principal(Principal("admin", Role.ADMIN, T0), "h-admin")
    store.create_principal(Principal("svc", Role.SERVICE, T0 + 1), "h-svc")
    store.create_agent(make_agent("alice"), "h-alice", ev("agent.create", subject="alice"))
    assert [(p.id, p.role, p.disabled) for p in store.list_principals()] == [
        ("admin", Role.ADMIN, False),
        ("alice", Role.AGENT, False),
        ("svc", Role.SERVICE, False),
    ]
    before = store.last_change()
    store.set_principal_disabled("svc", True, ev("principal.disable", subject="svc"))
    got = store.principal_by_credential("h-svc")
    assert got is not None and got.disabled
    assert [(c.kind, c.key) for c in store.changes_since(before)] == [(ChangeKind.PRINCIPAL, "svc")]
    store.set_principal_disabled("svc", False, ev("principal.enable", subject="svc"))
    store.set_credential("svc", "h-svc-2", ev("principal.rotate", subject="svc"))
    assert store.principal_by_credential("h-svc") is None
    assert store.principal_by_credential("h-svc-2") == Principal("svc", Role.SERVICE, T0 + 1)
    for change in (
        lambda: store.set_principal_disabled("nobody", True, ev()),
        lambda: store.set_credential("nobody", "h-x", ev()),
    ):
        with pytest.raises(NotFoundError):
            change()
    kinds = [e.kind for e in store.list_audit(AuditQuery())]
    assert kinds[-3:] == ["principal.disable", "principal.enable", "principal.rotate"]


def test_a_deleted_agent_leaves_a_tombstone_and_may_come_back(store: Store) -> None:
    store.create_agent(make_agent("alice"), "h-alice", ev("agent.create", subject="alice"))
    store.delete_agent("alice", 1_800_000_500_000, ev("agent.delete", subject="alice"))
    gone = store.get_agent("alice")
    assert gone is not None and gone.status is AgentStatus.DELETED
    assert gone.revoked_before_ms == 1_800_000_500_000 and dict(gone.public_keys) == {}
    assert store.principal_by_credential("h-alice") is None
    assert "alice" not in [p.id for p in store.list_principals()]
    with pytest.raises(NotFoundError):
        store.delete_agent("alice", 1, ev())
    again = make_agent("alice", created_at=T0 + 600)
    store.create_agent(again, "h-alice-2", ev("agent.create", subject="alice"))
    back = store.get_agent("alice")
    assert back is not None and back.status is AgentStatus.ACTIVE
    assert back.revoked_before_ms == 1_800_000_500_000  # nothing old passes for the new one
    assert store.principal_by_credential("h-alice-2") == Principal("alice", Role.AGENT, T0 + 600)


def test_duplicate_credential_hash_is_refused(store: Store) -> None:
    store.create_principal(Principal("a", Role.SERVICE, T0), "h-same")
    with pytest.raises(AlreadyExistsError):
        store.create_principal(Principal("b", Role.SERVICE, T0), "h-same")
    assert store.get_principal("b") is None
    assert store.principal_by_credential("h-same") == Principal("a", Role.SERVICE, T0)


# -- agents --------------------------------------------------------------------------


def test_agent_create_get_list(store: Store) -> None:
    alice = make_agent("alice")
    bob = make_agent(
        "bob",
        ceiling=Ceiling.parse(["read:/b/*"]),
        public_keys={},
        max_ttl=60,
        max_depth=0,
        created_at=T0 + 5,
    )
    # created out of order; listed by id
    store.create_agent(bob, "h-bob", ev("agent.create", subject="bob"))
    store.create_agent(alice, "h-alice", ev("agent.create", subject="alice"))

    got = store.get_agent("alice")
    assert got == alice
    assert got is not None
    assert dict(got.public_keys) == {"k1": key(1), "k2": key(2)}
    assert all(type(v) is bytes for v in got.public_keys.values())
    assert [str(g) for g in got.ceiling.grants] == ["read,write:/data/**", "list:/data/*"]
    assert got.ceiling.allows("write", "/data/x/y") and not got.ceiling.allows("list", "/data/x/y")
    assert got.status is AgentStatus.ACTIVE
    assert (got.max_ttl, got.max_depth, got.owner, got.description) == (900, 2, "ops", "an agent")
    assert store.get_agent("bob") == bob
    assert store.get_agent("carol") is None

    assert [a.id for a in store.list_agents()] == ["alice", "bob"]
    assert store.list_agents() == [alice, bob]

    # an agent is also a principal with the agent role, found by its credential
    assert store.principal_by_credential("h-alice") == Principal("alice", Role.AGENT, T0)
    assert store.get_principal("bob") == Principal("bob", Role.AGENT, T0 + 5)


def test_agent_update_round_trips(store: Store) -> None:
    store.create_agent(make_agent(), "h-alice", ev("agent.create", subject="alice"))
    store.create_agent(make_agent("zed"), "h-zed", ev("agent.create", subject="zed"))
    updated = make_agent().with_changes(
        status=AgentStatus.SUSPENDED,
        ceiling=Ceiling.parse(["read:/other/**"]),
        owner="sec",
        description="changed",
        max_ttl=30,
        max_depth=5,
        epoch=3,
        revoked_before_ms=1_800_000_123_456,
        public_keys={"k2": key(2), "k3": key(3)},  # k1 removed, k3 added
    )
    store.update_agent(updated, ev("agent.update", subject="alice"))

    got = store.get_agent("alice")
    assert got == updated
    assert got is not None
    assert got.status is AgentStatus.SUSPENDED and not got.active
    assert got.epoch == 3 and got.revoked_before_ms == 1_800_000_123_456
    assert dict(got.public_keys) == {"k2": key(2), "k3": key(3)}
    assert got.created_at == T0
    assert store.list_agents() == [updated, make_agent("zed")]  # the other agent is untouched

    # removing every key, then reactivating
    bare = updated.with_changes(public_keys={}, status=AgentStatus.ACTIVE, epoch=4)
    store.update_agent(bare, ev("agent.update", subject="alice"))
    assert store.get_agent("alice") == bare
    assert dict(store.get_agent("alice").public_keys) == {}  # type: ignore[union-attr]
    assert dict(store.get_agent("zed").public_keys) == {"k1": key(1), "k2": key(2)}  # type: ignore[union-attr]


def test_update_missing_agent_is_not_found(store: Store) -> None:
    before = store.last_change()
    with pytest.raises(NotFoundError):
        store.update_agent(make_agent("ghost"), ev("agent.update", subject="ghost"))
    assert store.get_agent("ghost") is None
    assert store.last_change() == before
    assert store.list_audit(AuditQuery()) == []


def test_update_of_a_plain_principal_is_not_found(store: Store) -> None:
    store.create_principal(Principal("svc", Role.SERVICE, T0), "h-svc")
    with pytest.raises(NotFoundError):
        store.update_agent(make_agent("svc"), ev("agent.update", subject="svc"))
    assert store.get_agent("svc") is None


def test_agent_id_colliding_with_principal(backend: Backend, store: Store) -> None:
    store.create_principal(Principal("svc", Role.SERVICE, T0), "h-svc")
    before = store.last_change()
    with pytest.raises(AlreadyExistsError):
        store.create_agent(make_agent("svc"), "h-agent-svc", ev("agent.create", subject="svc"))
    # nothing half-written
    assert store.get_agent("svc") is None
    assert store.list_agents() == []
    assert backend.query("SELECT COUNT(*) FROM agents") == [(0,)]
    assert backend.query("SELECT COUNT(*) FROM agent_keys") == [(0,)]
    assert store.get_principal("svc") == Principal("svc", Role.SERVICE, T0)
    assert store.principal_by_credential("h-agent-svc") is None
    assert store.last_change() == before
    assert store.list_audit(AuditQuery(kind="agent.create")) == []
    # the same agent id can't be created twice either
    store.create_agent(make_agent(), "h-alice", ev("agent.create", subject="alice"))
    with pytest.raises(AlreadyExistsError):
        store.create_agent(
            make_agent(description="dup"), "h-alice2", ev("agent.create", subject="alice")
        )
    assert store.get_agent("alice") == make_agent()


# -- root keys -----------------------------------------------------------------------


def test_root_keys(store: Store) -> None:
    # the second key is dated earlier (its replica's clock lags): it still comes last,
    # by the generation the store assigns, not by its clock
    first = RootKeyRecord("rk-b", b"sealed-b\x00\xff" * 4, T0 + 100)
    second = RootKeyRecord("rk-a", b"\xff\x00sealed-a", T0)
    store.add_root_key(first, ev("root_key.add", subject="rk-b"))
    store.add_root_key(second)
    first = dataclasses.replace(first, generation=1)
    second = dataclasses.replace(second, generation=2)
    assert store.root_keys() == [first, second]  # in the order they were added
    assert all(type(r.sealed) is bytes for r in store.root_keys())

    store.retire_root_key("rk-a", T0 + 200, ev("root_key.retire", subject="rk-a"))
    assert store.root_keys() == [first, dataclasses.replace(second, retired_at=T0 + 200)]

    before = store.last_change()
    with pytest.raises(NotFoundError):
        store.retire_root_key("rk-a", T0 + 300, ev("root_key.retire", subject="rk-a"))
    with pytest.raises(NotFoundError):
        store.retire_root_key("rk-zzz", T0 + 300, ev("root_key.retire", subject="rk-zzz"))
    with pytest.raises(AlreadyExistsError):
        store.add_root_key(RootKeyRecord("rk-b", b"other", T0 + 400))
    assert store.root_keys() == [first, dataclasses.replace(second, retired_at=T0 + 200)]
    assert store.last_change() == before
    assert [e.subject for e in store.list_audit(AuditQuery())] == ["rk-b", "rk-a"]


# -- tokens and delegations ----------------------------------------------------------


def test_tokens(store: Store) -> None:
    caveats = ("action = read", "resource = /données/日本/*", "note = «é» 🙂", "")
    rec = token("t1", caveats=caveats, issued_at=T0 + 0.25, expires_at=T0 + 600.5)
    store.record_token(rec, ev("issue", subject="t1"))
    got = store.get_token("t1")
    assert got == rec
    assert got is not None and got.caveats == caveats and isinstance(got.caveats, tuple)
    empty = token("t2", caveats=())
    store.record_token(empty, ev("issue", subject="t2"))
    assert store.get_token("t2") == empty
    assert store.get_token("nope") is None
    assert [e.subject for e in store.list_audit(AuditQuery(kind="issue"))] == ["t1", "t2"]


def test_delegations(store: Store) -> None:
    d2 = hop(
        "d2",
        T0 + 20,
        parent="d1",
        from_agent="bob",
        to_agent="carol",
        offline=True,
        expires_at=None,
        restrictions=("resource = /x/*", "ünïcode"),
    )
    d1 = hop("d1", T0 + 10)
    d3 = hop("d3", T0 + 30, parent="d2", from_agent="carol", to_agent="dave")
    other = hop("o1", T0 + 5, token_id="t9", parent="t9")
    store.record_delegations([d3, d1])
    store.record_delegations([d2, other])
    store.record_delegations([])

    assert store.get_delegation("d2") == d2
    got = store.get_delegation("d2")
    assert got is not None and got.offline is True and got.expires_at is None
    assert got.restrictions == ("resource = /x/*", "ünïcode")
    assert store.get_delegation("d1") == d1
    assert store.get_delegation("nope") is None

    # the same id again keeps the first record, without error
    store.record_delegations(
        [dataclasses.replace(d1, to_agent="mallory", at=T0 + 99), hop("d4", T0 + 40, parent="d3")]
    )
    assert store.get_delegation("d1") == d1

    assert store.delegations_of("t1") == [d1, d2, d3, hop("d4", T0 + 40, parent="d3")]
    assert store.delegations_of("t1", limit=2) == [d1, d2]  # oldest first, bounded
    assert store.delegations_of("t9") == [other]
    assert store.delegations_of("nope") == []
    # a delegation and its audit record commit together
    store.record_delegations([hop("d5", T0 + 50, parent="d4")], ev("delegate", subject="d5"))
    assert [e.subject for e in store.list_audit(AuditQuery(kind="delegate"))] == ["d5"]


# -- revocations ---------------------------------------------------------------------


def test_revocations(store: Store) -> None:
    assert store.revoke("t-long", P0, P0 + 1000, "admin", "r1", ev("revoke", subject="t-long"))
    assert store.revoke("t-short", P0, P0 + 100, "admin", "r2", ev("revoke", subject="t-short"))
    assert store.revoke("t-edge", P0, P0 + 500, "admin", "r3", ev("revoke", subject="t-edge"))
    assert not store.revoke(
        "t-long", P0 + 1, P0 + 50, "svc", "shorter", ev("revoke", subject="t-long")
    )

    assert sorted(store.revocations(P0)) == [
        ("t-edge", P0 + 500),
        ("t-long", P0 + 1000),
        ("t-short", P0 + 100),
    ]
    # a second revoke never shortens an entry ...
    assert sorted(store.revocations(P0 + 200)) == [("t-edge", P0 + 500), ("t-long", P0 + 1000)]
    # ... and lengthens it when it names a longer-lived token
    assert not store.revoke(
        "t-long", P0 + 1, P0 + 5000, "svc", "longer", ev("revoke", subject="t-long")
    )
    # an entry stops being in force at its expiry
    assert store.revocations(P0 + 500) == [("t-long", P0 + 5000)]

    assert store.prune_revocations(P0 + 500, 0) == 2  # t-short and t-edge (expires_at <= now)
    assert store.revocations(P0) == [("t-long", P0 + 5000)]
    assert store.prune_revocations(P0 + 500, 0) == 0
    assert store.prune_revocations(P0 + 6000, 1001) == 0  # not yet expired for 1001 s
    assert store.prune_revocations(P0 + 6000, 1000) == 1
    assert store.revocations(0) == []


# -- change feed ---------------------------------------------------------------------


def test_change_feed(store: Store) -> None:
    assert store.last_change() == 0
    assert store.changes_since(0) == []

    store.create_principal(Principal("svc", Role.SERVICE, T0), "h-svc")
    store.create_agent(make_agent(), "h-alice", ev("agent.create"))
    store.update_agent(make_agent(epoch=1), ev("agent.update"))
    store.add_root_key(RootKeyRecord("rk1", b"s", T0))
    store.retire_root_key("rk1", T0 + 1, ev("root_key.retire"))
    assert store.revoke("t1", P0, P0 + 600, "admin", "", ev("revoke"))
    # these do not add changes
    assert not store.revoke("t1", P0, P0 + 300, "admin", "", ev("revoke"))
    store.record_token(token(), ev("issue"))
    store.record_delegations([hop("d1", T0)])
    store.append_audit([ev("verify")])
    store.prune_revocations(P0, 0)

    changes = store.changes_since(0)
    assert kinds_keys(changes) == [
        (ChangeKind.PRINCIPAL, "svc", None),
        (ChangeKind.AGENT, "alice", None),
        (ChangeKind.AGENT, "alice", None),
        (ChangeKind.ROOT_KEY, "rk1", None),
        (ChangeKind.ROOT_KEY, "rk1", None),
        (ChangeKind.REVOCATION, "t1", P0 + 600),
    ]
    assert all(isinstance(c.kind, ChangeKind) for c in changes)
    seqs = [c.seq for c in changes]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert store.last_change() == seqs[-1]

    assert store.changes_since(seqs[2]) == changes[3:]
    assert store.changes_since(seqs[-1]) == []
    assert store.changes_since(seqs[0], limit=2) == changes[1:3]

    # after pruning, the same id revoked again is new and appends a change
    assert store.prune_revocations(P0 + 600, 0) == 1
    assert store.revoke("t1", P0 + 700, P0 + 1300, "admin", "", ev("revoke"))
    tail = store.changes_since(seqs[-1])
    assert kinds_keys(tail) == [(ChangeKind.REVOCATION, "t1", P0 + 1300)]
    assert store.last_change() == tail[0].seq > seqs[-1]


# -- audit ---------------------------------------------------------------------------


def test_audit_written_with_mutations(store: Store) -> None:
    e1 = ev("principal.create", subject="svc", detail={"role": "service"})
    e2 = ev("agent.create", at=T0 + 1, subject="alice", chain=("alice",))
    e3 = ev("agent.update", at=T0 + 2, subject="alice", ok=True, code="", reason="epoch")
    e4 = ev("root_key.add", at=T0 + 3, subject="rk1")
    e5 = ev("root_key.retire", at=T0 + 4, subject="rk1")
    e6 = ev("issue", at=T0 + 5, principal="alice", subject="t1", chain=("alice",))
    e7 = ev("revoke", at=T0 + 6, subject="t1", reason="compromised")
    e8 = ev("revoke", at=T0 + 7, subject="t1", ok=False, code="already", reason="again")
    store.create_principal(Principal("svc", Role.SERVICE, T0), "h-svc", e1)
    store.create_agent(make_agent(), "h-alice", e2)
    store.update_agent(make_agent(epoch=1), e3)
    store.add_root_key(RootKeyRecord("rk1", b"s", T0), e4)
    store.retire_root_key("rk1", T0 + 1, e5)
    store.record_token(token(), e6)
    assert store.revoke("t1", T0, T0 + 600, "admin", "compromised", e7)
    assert not store.revoke("t1", T0, T0 + 600, "admin", "again", e8)  # still audited

    events = store.list_audit(AuditQuery())
    assert unseq(events) == [stored(e) for e in (e1, e2, e3, e4, e5, e6, e7, e8)]
    seqs = [e.seq for e in events]
    assert all(s > 0 for s in seqs) and seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_audit_append_filters_and_paging(store: Store) -> None:
    batch = [
        ev(
            "verify",
            principal="svc",
            subject="t1",
            chain=("alice",),
            action="read",
            resource="/data/x",
            presenter="alice",
            count=3,
            last_at=T0 + 9,
        ),
        ev(
            "verify",
            principal="svc",
            subject="t2",
            chain=("alice", "bob"),
            ok=False,
            code="revoked",
            reason="token revoked",
            presenter="bob",
        ),
        ev("issue", principal="bob", subject="t3", chain=("bob",)),
        ev("delegate", principal="alice", subject="t1", chain=("alice", "bobby")),
        ev("verify", principal="svc", subject="t4", chain=("abc",)),
        ev("issue", principal="admin", subject="t5"),
    ]
    store.append_audit(batch)
    store.append_audit([])
    all_events = store.list_audit(AuditQuery())
    assert unseq(all_events) == [stored(e) for e in batch]
    assert all_events[0].count == 3 and all_events[0].last_at == T0 + 9
    assert all_events[1].ok is False and all_events[1].code == "revoked"

    def subjects(**kw: object) -> list[str]:
        return [e.subject for e in store.list_audit(AuditQuery(**kw))]  # type: ignore[arg-type]

    assert subjects(principal="svc") == ["t1", "t2", "t4"]
    assert subjects(principal="nobody") == []
    assert subjects(kind="issue") == ["t3", "t5"]
    assert subjects(token_id="t1") == ["t1", "t1"]
    assert subjects(kind="verify", principal="svc", token_id="t2") == ["t2"]
    # agent matches whole ids anywhere in the chain
    assert subjects(agent="alice") == ["t1", "t2", "t1"]
    assert subjects(agent="bob") == ["t2", "t3"]
    assert subjects(agent="bobby") == ["t1"]
    assert subjects(agent="bo") == []
    assert subjects(agent="ob") == []
    assert subjects(agent="verify", kind="verify") == []

    # paging by seq
    first = store.list_audit(AuditQuery(limit=2))
    assert [e.subject for e in first] == ["t1", "t2"]
    second = store.list_audit(AuditQuery(after_seq=first[-1].seq, limit=2))
    assert [e.subject for e in second] == ["t3", "t1"]
    rest = store.list_audit(AuditQuery(after_seq=second[-1].seq, limit=100))
    assert [e.subject for e in rest] == ["t4", "t5"]
    assert store.list_audit(AuditQuery(after_seq=rest[-1].seq)) == []
    assert subjects(principal="svc", after_seq=first[0].seq) == ["t2", "t4"]


def test_audit_agent_filter_treats_underscore_literally(store: Store) -> None:
    # ids may contain '_' (and '.'); the filter must still match whole ids only
    store.append_audit(
        [
            ev("verify", subject="t1", chain=("abc",)),
            ev("verify", subject="t2", chain=("a_c",)),
            ev("verify", subject="t3", chain=("a.c",)),
        ]
    )
    assert [e.subject for e in store.list_audit(AuditQuery(agent="a_c"))] == ["t2"]
    assert [e.subject for e in store.list_audit(AuditQuery(agent="a.c"))] == ["t3"]
    assert [e.subject for e in store.list_audit(AuditQuery(agent="abc"))] == ["t1"]


def test_audit_fields_are_stored_bounded(store: Store, backend: Backend) -> None:
    # a bad request's fields can be as long as its message: a record stays small
    store.append_audit(
        [
            ev(
                "verify",
                subject="t" * 300,
                ok=False,
                code="invalid_request",
                reason="r" * 10_000,
                action="a" * 5000,
                resource="/" + "x" * 60_000,
                presenter="p" * 900,
                chain=("c" * 100,) * 50,
                detail={"why": "w" * 9000},
            )
        ]
    )
    (e,) = store.list_audit(AuditQuery())
    assert (len(e.subject), len(e.reason), len(e.action), len(e.resource), len(e.presenter)) == (
        128,
        512,
        64,
        1024,
        64,
    )
    assert len(e.chain) == 32 and all(len(a) == 64 for a in e.chain)
    assert e.detail["truncated"] == {
        "subject": 300,
        "reason": 10_000,
        "action": 5000,
        "resource": 60_001,
        "presenter": 900,
        "chain": 50,
        "detail": len('{"why":"' + "w" * 9000 + '"}'),
    }
    assert len(e.detail_json()) < 2048
    # the revocation's own reason is bounded the same way
    store.revoke("t1", T0, T0 + 600, "admin", "z" * 100_000, ev("revoke"))
    assert backend.query("SELECT LENGTH(reason) FROM revocations") == [(512,)]


def test_audit_retention_deletes_the_oldest(store: Store) -> None:
    store.append_audit([ev("old", at=T0 + i, last_at=T0 + i + 0.5) for i in range(30)])
    store.append_audit([ev("new", at=T0 + 1000 + i) for i in range(5)])
    assert store.prune_audit(T0 + 10, SIGN, limit=100) == 0  # nothing sealed: nothing goes
    assert store.seal_audit(SIGN, T0 + 2000, keep=False) == 35
    assert store.prune_audit(T0 + 10, SIGN, limit=100) == 10  # last seen before T0 + 10
    assert store.prune_audit(T0 + 10, SIGN, limit=100) == 0
    assert store.prune_audit(T0 + 500, SIGN, limit=8) == 8  # at most limit per call
    assert store.prune_audit(T0 + 500, SIGN, limit=100) == 12
    assert [e.kind for e in store.list_audit(AuditQuery())] == ["new"] * 5
    # what remains still proves itself from the signed cut
    start, digest = store.audit_start()
    cut = [c for c in store.audit_checkpoints(start - 1) if c.pos == start]
    assert start == 30 and cut and cut[0].digest == digest.hex() and cut[0].valid()
    broke, head, _ = walk(store.audit_proof_page(start, 100), start, digest, [])
    assert broke is None and head == 35


def test_audit_limit_is_clamped(store: Store) -> None:
    store.append_audit([ev("bulk", at=T0 + i, subject=f"s{i}") for i in range(1005)])
    assert len(store.list_audit(AuditQuery(kind="bulk", limit=5000))) == 1000
    assert len(store.list_audit(AuditQuery(kind="bulk", limit=1000))) == 1000
    assert len(store.list_audit(AuditQuery(kind="bulk", limit=999))) == 999
    zero = store.list_audit(AuditQuery(kind="bulk", limit=0))
    assert [e.subject for e in zero] == ["s0"]
    assert [e.subject for e in store.list_audit(AuditQuery(kind="bulk", limit=-7))] == ["s0"]
    page = store.list_audit(AuditQuery(kind="bulk", limit=5000))
    tail = store.list_audit(AuditQuery(kind="bulk", after_seq=page[-1].seq, limit=5000))
    assert [e.subject for e in tail] == [f"s{i}" for i in range(1000, 1005)]


def test_audit_detail_round_trips(store: Store) -> None:
    detail: dict[str, object] = {
        "b": [1, 2.5, "x"],
        "a": {"nested": {"deep": True}},
        "none": None,
        "text": "ünïcödé 日本 🙂",
        "n": -3,
        "empty": "",
    }
    store.append_audit([ev("d1", detail=detail), ev("d2")])
    got = store.list_audit(AuditQuery())
    assert got[0].detail == detail
    assert got[1].detail == {}
    assert unseq(got) == [stored(ev("d1", detail=detail)), stored(ev("d2"))]


# -- durability ----------------------------------------------------------------------


def test_sqlite_revoke_visible_to_a_new_store_without_closing(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    first = SqliteStore(path)
    try:
        first.migrate()
        assert first.revoke("t1", T0, T0 + 600, "admin", "gone", ev("revoke", subject="t1"))
        fresh = SqliteStore(path)  # the first one is still open
        try:
            assert fresh.revocations(T0) == [("t1", T0 + 600)]
            assert kinds_keys(fresh.changes_since(0)) == [(ChangeKind.REVOCATION, "t1", T0 + 600)]
            assert [e.subject for e in fresh.list_audit(AuditQuery(kind="revoke"))] == ["t1"]
        finally:
            fresh.close()
    finally:
        first.close()


# -- targeted agent changes ------------------------------------------------------------


def test_patches_from_two_replicas_compose(backend: Backend) -> None:
    from capgate import AgentStatus, Ceiling
    from capgate_server.store import AgentPatch

    first, second = backend.open(), backend.open()
    first.migrate()
    first.create_agent(make_agent(), "h-alice", ev("agent.create"))
    # two replicas change different things "at once": neither change is lost
    first.patch_agent("alice", AgentPatch(status=AgentStatus.SUSPENDED), ev("agent.suspend"))
    second.patch_agent("alice", AgentPatch(description="night shift"), ev("agent.update"))
    second.patch_agent("alice", AgentPatch(revoke_before_ms=5_000), ev("agent.revoke-all"))
    first.patch_agent("alice", AgentPatch(revoke_before_ms=4_000), ev("agent.revoke-all"))
    a = first.get_agent("alice")
    assert a is not None and a.status is AgentStatus.SUSPENDED
    assert a.description == "night shift" and a.epoch == 2 and a.revoked_before_ms == 5_000
    first.patch_agent(
        "alice",
        AgentPatch(
            ceiling=Ceiling.parse(["read:/x/*"]),
            max_ttl=60,
            max_depth=1,
            add_key=("k" * 16, b"p" * 32),
        ),
        ev("agent.update"),
    )
    a = second.get_agent("alice")
    assert a is not None and str(a.ceiling) == "read:/x/*" and (a.max_ttl, a.max_depth) == (60, 1)
    assert dict(a.public_keys)["k" * 16] == b"p" * 32
    seq = first.last_change()
    with pytest.raises(NotFoundError):
        first.patch_agent("alice", AgentPatch(remove_key="nope"), ev("agent.key-remove"))
    with pytest.raises(NotFoundError):
        first.patch_agent("ghost", AgentPatch(status=AgentStatus.ACTIVE), ev("agent.resume"))
    assert first.last_change() == seq  # nothing half-written
    second.patch_agent("alice", AgentPatch(remove_key="k" * 16), ev("agent.key-remove"))
    assert "k" * 16 not in first.get_agent("alice").public_keys


# -- proof of possession ----------------------------------------------------------------


def test_require_proof_round_trips_and_patches(store: Store) -> None:
    from capgate_server.store import AgentPatch

    store.create_agent(make_agent(require_proof=True), "h-alice", ev("agent.create"))
    store.create_agent(make_agent("bob"), "h-bob", ev("agent.create"))
    assert store.get_agent("alice").require_proof  # type: ignore[union-attr]
    assert not store.get_agent("bob").require_proof  # type: ignore[union-attr]
    store.patch_agent("bob", AgentPatch(require_proof=True), ev("agent.update"))
    store.patch_agent("alice", AgentPatch(require_proof=False), ev("agent.update"))
    assert [a.require_proof for a in store.list_agents()] == [False, True]
    store.update_agent(make_agent(require_proof=True), ev("agent.update"))
    assert store.get_agent("alice").require_proof  # type: ignore[union-attr]


def test_a_nonce_is_redeemed_once_by_any_store_object(backend: Backend) -> None:
    first, second = backend.open(), backend.open()  # two replicas on one database
    first.migrate()
    until = T0 + 90
    assert first.redeem_nonces([("alice", "n1", until), ("alice", "n2", until)]) == [True, True]
    # the same nonce again: at the other replica, twice in one call, or for another agent
    assert second.redeem_nonces(
        [("alice", "n1", until), ("bob", "n1", until), ("bob", "n3", until), ("bob", "n3", until)]
    ) == [False, True, True, False]
    assert first.redeem_nonces([]) == []
    # many at once (more than one statement's worth)
    many = [("carol", f"m{i}", until) for i in range(450)]
    assert first.redeem_nonces(many) == [True] * 450
    assert second.redeem_nonces(many[::50]) == [False] * 9


def test_nonces_are_forgotten_only_after_they_expire(backend: Backend, store: Store) -> None:
    store.redeem_nonces([("alice", "old", P0 + 10), ("alice", "new", P0 + 1000)])
    store.redeem_nonces([("alice", "x", P0 + 1000)], forget_before=P0 + 100)
    left = sorted(r[0] for r in backend.query("SELECT nonce FROM proof_nonces"))
    assert left == ["new", "x"]
    # forgotten, a nonce could be redeemed again; by then its proof is long out of its window
    assert store.redeem_nonces([("alice", "old", P0 + 10), ("alice", "new", P0 + 1000)]) == [
        True,
        False,
    ]
