"""The MCP tool guard: ``ToolGuard``, a middleware for servers built with the official
``mcp`` SDK (``pip install 'capgate[mcp]'``). Imported on its own, so the rest of the
SDK never needs ``mcp``."""

from capgate_client._guard import Rule
from capgate_client._mcp_guard import ToolGuard

__all__ = ["Rule", "ToolGuard"]
