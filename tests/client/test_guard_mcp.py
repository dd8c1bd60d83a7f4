"""The MCP tool guard: the example server (examples/mcp_server.py) launched over stdio and
driven by the MCP SDK's own client, checking every tool call through a real capgate
server; and the same server over streamable HTTP with the token in a header."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from harness import KeyedAgent, wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mcp_server.py"


@pytest.fixture
def alice(server):
    a = KeyedAgent(server, grants=["read_file,search:/**"], token_grant="read_file:/files/**")
    yield a
    a.close()


def text(result):
    return " ".join(getattr(c, "text", "") for c in result.content)


def launch(alice):
    env = {
        **os.environ,
        "CAPGATE_SERVER": alice.server.address,
        "CAPGATE_CREDENTIAL": alice.service_credential,
    }
    return StdioServerParameters(command=sys.executable, args=[str(EXAMPLE)], env=env)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_tool_calls_are_checked_against_their_arguments(alice):
    reports = alice.agent.attenuate(alice.token, ["resource /files/reports/**"]).token
    search = alice.agent.issue("search:/index/*", caveats=["ctx limit <= 10"]).token

    async def session():
        async with Client(launch(alice)) as mcp:
            names = sorted(t.name for t in (await mcp.list_tools()).tools)  # not guarded
            p = alice.presenter(reports)
            ok = await mcp.call_tool(
                "read_file", {"path": "reports/q3.txt"}, meta=p.mcp_meta("read_file")
            )
            other = await mcp.call_tool(
                "read_file", {"path": "hr/salaries.txt"}, meta=p.mcp_meta("read_file")
            )
            walk = await mcp.call_tool(
                "read_file", {"path": "reports/../hr/salaries.txt"}, meta=p.mcp_meta("read_file")
            )
            wrong_tool = await mcp.call_tool(
                "search", {"index": "docs", "query": "doc"}, meta=p.mcp_meta("search")
            )
            s = alice.presenter(search)
            few = await mcp.call_tool(
                "search", {"index": "docs", "query": "doc-1", "limit": 3}, meta=s.mcp_meta("search")
            )
            many = await mcp.call_tool(
                "search", {"index": "docs", "query": "doc", "limit": 50}, meta=s.mcp_meta("search")
            )
            return names, ok, other, walk, wrong_tool, few, many

    names, ok, other, walk, wrong_tool, few, many = run(session())
    assert names == ["read_file", "search"]
    assert not ok.is_error and text(ok) == "Q3: revenue up 4%."
    assert other.is_error and "denied by capgate (caveat_failed)" in text(other)
    assert "resource /files/reports/**" in text(other)
    assert walk.is_error and "(invalid_request)" in text(walk)
    assert wrong_tool.is_error and "caveat_failed" in text(wrong_tool)  # action = tool name
    assert not few.is_error and "doc-1" in text(few)
    assert many.is_error and "ctx limit <= 10" in text(many)  # the caveat bounds an argument


def test_no_token_a_replay_and_a_stolen_token_are_tool_errors(alice):
    async def session():
        async with Client(launch(alice)) as mcp:
            args = {"path": "reports/q3.txt"}
            bare = await mcp.call_tool("read_file", args)
            meta = alice.presenter().mcp_meta("read_file")
            first = await mcp.call_tool("read_file", args, meta=meta)
            again = await mcp.call_tool("read_file", args, meta=meta)
            for_other_tool = await mcp.call_tool(
                "read_file", args, meta={**alice.presenter().mcp_meta("search")}
            )
            stolen = await mcp.call_tool(
                "read_file", args, meta=alice.presenter(key=False).mcp_meta("read_file")
            )
            garbage = await mcp.call_tool(
                "read_file", args, meta={"capgate/token": "x", "capgate/proof": "y"}
            )
            not_text = await mcp.call_tool(
                "read_file", {"path": ["a"]}, meta=alice.presenter().mcp_meta("read_file")
            )
            return bare, first, again, for_other_tool, stolen, garbage, not_text

    bare, first, again, for_other_tool, stolen, garbage, not_text = run(session())
    assert bare.is_error and "(missing_token)" in text(bare)
    assert not first.is_error
    assert again.is_error and "(proof_replayed)" in text(again)
    assert for_other_tool.is_error and "(bad_proof)" in text(for_other_tool)
    # without a proof the server knows no presenter: the stolen token is worth nothing
    assert stolen.is_error and "(no_presenter)" in text(stolen)
    assert garbage.is_error and "denied by capgate" in text(garbage)
    assert not_text.is_error and "(invalid_request)" in text(not_text)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_over_streamable_http_the_token_may_come_in_a_header(alice):
    port = _free_port()
    env = {
        **os.environ,
        "CAPGATE_SERVER": alice.server.address,
        "CAPGATE_CREDENTIAL": alice.service_credential,
    }
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--http", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for(up, timeout=30)
        url = f"http://127.0.0.1:{port}/mcp"

        async def session():
            # the SDK's own HTTP client, carrying the token on every request
            from mcp.client.streamable_http import streamable_http_client
            from mcp.shared._httpx_utils import create_mcp_http_client

            http = create_mcp_http_client(headers={"authorization": f"Capgate {alice.token}"})
            async with http, Client(streamable_http_client(url, http_client=http)) as mcp:
                meta = {"capgate/proof": alice.presenter().proof("tools/call", "read_file")}
                ok = await mcp.call_tool("read_file", {"path": "reports/q3.txt"}, meta=meta)
                bare = await mcp.call_tool("read_file", {"path": "reports/q3.txt"})
            return ok, bare

        ok, bare = run(session())
        assert not ok.is_error and text(ok) == "Q3: revenue up 4%."
        assert bare.is_error and "(no_presenter)" in text(bare)  # token, but no proof
    finally:
        proc.terminate()
        proc.wait(10)
