"""``ToolGuard``: capgate in front of every tool of an MCP server (the official ``mcp``
SDK, version 2: a server middleware).

Each ``tools/call`` is checked as action = the tool's name (or the rule's
action), with the resource and the context taken from the call's arguments by
the tool's ``Rule``, so ``resource`` and ``ctx`` caveats constrain what the tool
is asked to do, not only which tool. A tool without a rule is denied. The token
and proof travel in the call's ``_meta`` (``capgate/token``, ``capgate/proof``,
the proof made for ``tools/call`` and the tool's name); over HTTP the token may
instead be the ``authorization: Capgate <token>`` header. A deny is the tool's
result, an error with the reason, so the model sees why. Other requests pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.types import CallToolResult, TextContent

from capgate import TOKEN_HEADER, presented_token
from capgate_client._guard import (
    _CURRENT,
    INVALID_REQUEST,
    NO_RULE,
    AsyncGuard,
    Presentation,
    Rule,
    deny,
    settled,
)
from capgate_client._presenting import MCP_METHOD, MCP_PROOF_KEY, MCP_TOKEN_KEY
from capgate_client._types import Proof, VerifyResult

__all__ = ["ToolGuard"]

log = logging.getLogger("capgate.guard")


class ToolGuard:
    """An MCP server middleware: ``MCPServer(..., middleware=[ToolGuard(guard, tools)])``.

    ``tools``: tool name → ``Rule`` (``Rule("", "/files/{path}", ctx={"size": "size"})``:
    the action is the tool's name; fields come from the arguments). ``unguarded``:
    tools that pass unchecked. ``presenter``: who the caller is by the server's own
    knowledge (given the request context), e.g. the one agent a stdio server runs for.
    """

    def __init__(
        self,
        guard: AsyncGuard,
        tools: Mapping[str, Rule],
        *,
        unguarded: Iterable[str] = (),
        presenter: Callable[[ServerRequestContext[Any, Any]], str] | None = None,
    ) -> None:
        self._guard = guard
        self._tools = dict(tools)
        self._unguarded = frozenset(unguarded)
        self._presenter = presenter

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.method != MCP_METHOD or ctx.request_id is None:
            return await call_next(ctx)
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        name = params.get("name")
        if isinstance(name, str) and name in self._unguarded:
            return await call_next(ctx)
        p, result = await self._decide(ctx, params, name)
        if not result.allowed:
            return CallToolResult(
                content=[
                    TextContent(
                        type="text", text=(f"denied by capgate ({result.code}): {result.reason}")
                    )
                ],
                is_error=True,
            )
        reset = _CURRENT.set(settled(p, result) if p is not None else None)
        try:
            return await call_next(ctx)
        finally:
            _CURRENT.reset(reset)

    async def _decide(
        self, ctx: ServerRequestContext[Any, Any], params: Mapping[str, Any], name: object
    ) -> tuple[Presentation | None, VerifyResult]:
        if not isinstance(name, str) or not name:
            return None, deny(INVALID_REQUEST, "a tool call needs the tool's name")
        meta = ctx.meta if isinstance(ctx.meta, Mapping) else params.get("_meta")
        meta = meta if isinstance(meta, Mapping) else {}
        token = meta.get(MCP_TOKEN_KEY)
        if not isinstance(token, str) or not token:
            headers = getattr(ctx.request, "headers", None)
            token = presented_token(headers.get(TOKEN_HEADER)) if headers is not None else None
        proof = meta.get(MCP_PROOF_KEY)
        presenter = ""
        if self._presenter is not None:
            try:
                presenter = self._presenter(ctx) or ""
            except Exception:  # a broken presenter function presents no one (fail closed)
                log.exception("presenter function failed for tool %s", name)
        p = Presentation(
            token if isinstance(token, str) else None,
            Proof(proof, MCP_METHOD, name) if isinstance(proof, str) and proof else None,
            presenter,
        )
        rule = self._tools.get(name)
        if rule is None:
            return p, deny(NO_RULE, f"tool {name!r} has no rule in this server's guard")
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, Mapping):
            return p, deny(INVALID_REQUEST, "the tool's arguments must be an object")
        try:
            access = rule.access(arguments, action=name)
        except Exception as e:
            return p, deny(INVALID_REQUEST, f"invalid request: {getattr(e, 'message', e)}")
        return p, await self._guard.check(p, access)
