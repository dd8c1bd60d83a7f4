"""An MCP server whose two tools are guarded by capgate.

    read_file(path)          checked as: read_file on /files/<path>
    search(index, query, limit)   checked as: search on /index/<index>, ctx limit=<limit>

So a token can say which files an agent may read (``resource /files/reports/**``)
and how many results it may ask for (``ctx limit <= 10``), not only which tool.
The server asks capgate as a service principal::

    CAPGATE_SERVER=127.0.0.1:50051 CAPGATE_CREDENTIAL="$(cat files-mcp.cred)" \\
        python examples/mcp_server.py                 # stdio (an MCP client launches it)
    ... python examples/mcp_server.py --http 8000     # streamable HTTP on 127.0.0.1:8000/mcp

The agent presents its token (and a proof) in each call's ``_meta``::

    presenter = Presenter(token, key, audience="files-mcp")  # the server's principal id
    await client.call_tool("read_file", {"path": "reports/q3.txt"},
                           meta=presenter.mcp_meta("read_file"))
"""

from __future__ import annotations

import argparse
import os

from mcp.server.mcpserver import MCPServer

from capgate_client import AsyncClient, AsyncGuard
from capgate_client.mcp import Rule, ToolGuard

FILES = {
    "reports/q3.txt": "Q3: revenue up 4%.",
    "reports/q4.txt": "Q4: revenue up 6%.",
    "hr/salaries.txt": "(confidential)",
}
INDEX = {"docs": [f"doc-{i}" for i in range(50)]}


def build(server: str, credential: str) -> MCPServer:
    guard = AsyncGuard(AsyncClient(server, credential))
    tools = {
        "read_file": Rule("", "/files/{path*}"),
        "search": Rule("", "/index/{index}", ctx={"limit": "limit"}),
    }
    mcp = MCPServer("capgate-files", middleware=[ToolGuard(guard, tools)])

    @mcp.tool()
    def read_file(path: str) -> str:
        """Read one file."""
        if path not in FILES:
            raise ValueError(f"no file {path!r}")
        return FILES[path]

    @mcp.tool()
    def search(index: str, query: str, limit: int = 5) -> list[str]:
        """Search an index; at most ``limit`` hits."""
        hits = [d for d in INDEX.get(index, []) if query in d]
        return hits[:limit]

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--http",
        type=int,
        metavar="PORT",
        help="serve streamable HTTP on 127.0.0.1:PORT instead of stdio",
    )
    args = parser.parse_args()
    mcp = build(
        os.environ.get("CAPGATE_SERVER", "127.0.0.1:50051"), os.environ["CAPGATE_CREDENTIAL"]
    )
    if args.http:
        import uvicorn

        uvicorn.run(
            mcp.streamable_http_app(), host="127.0.0.1", port=args.http, log_level="warning"
        )
    else:
        mcp.run("stdio")


if __name__ == "__main__":
    main()
