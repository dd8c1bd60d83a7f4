"""The SDK against a real server: the asyncio client's lazy channel, streams, the version."""

from __future__ import annotations

import asyncio
import importlib.metadata

import capgate
from capgate_client import AsyncClient, Client


def test_the_package_version_is_the_one_the_metadata_says():
    assert capgate.__version__ == importlib.metadata.version("capgate")


def test_an_async_client_made_outside_any_event_loop_works_in_each_one(server):
    """The usual FastAPI pattern: the client is a module global, made at import time."""
    client = AsyncClient(server.address, server.admin_credential)

    async def names() -> set[str]:
        return {a.id for a in await client.list_agents()}

    with server.client() as admin:
        admin.create_agent("lazy", ["read:/x/**"])
    assert "lazy" in asyncio.run(names())
    assert "lazy" in asyncio.run(names())  # a second loop: a channel of its own
    asyncio.run(client.close())


def _setup(server) -> tuple[str, str]:
    with server.client() as admin:
        _, cred = admin.create_agent("streamer", ["read:/data/**"])
        svc = admin.create_principal("stream-svc", "service").credential
    with server.client(cred) as agent:
        return agent.issue("read:/data/*").token, svc


def test_verify_stream_answers_each_check_in_order(server):
    token, svc = _setup(server)
    checks = [(token, "read", f"/data/{i}", "streamer", None) for i in range(5)]
    checks.append((token, "write", "/data/x", "streamer", None))
    with Client(server.address, svc) as service:
        results = list(service.verify_stream(iter(checks)))
    assert [r.allowed for r in results] == [True] * 5 + [False]
    assert results[-1].code == "beyond_ceiling"  # write is not in its ceiling


def test_async_verify_stream_takes_an_async_iterable(server):
    token, svc = _setup(server)

    async def checks():
        for action in ("read", "write", "read"):
            yield (token, action, "/data/x", "streamer", None)

    async def run() -> list[bool]:
        async with AsyncClient(server.address, svc) as service:
            return [r.allowed async for r in service.verify_stream(checks())]

    assert asyncio.run(run()) == [True, False, True]


def test_a_client_refuses_a_deadline_no_call_could_meet() -> None:
    """NaN, the infinities, 0 and negatives failed every call with DEADLINE_EXCEEDED."""
    import math

    import pytest

    from capgate import InvalidArgumentError

    for cls in (Client, AsyncClient):
        for bad in (math.nan, math.inf, 0, -1, 1e9, "5"):
            with pytest.raises(InvalidArgumentError, match="timeout"):
                cls("127.0.0.1:1", "cg_x", timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="credential"):
            cls("127.0.0.1:1", None)  # type: ignore[arg-type]
    Client("127.0.0.1:1", "cg_x", timeout=0.5).close()
    asyncio.run(AsyncClient("127.0.0.1:1", "cg_x", timeout=0.5).close())
