"""A small HTTP/1.1 server on the server's own event loop, for the console alone.

It speaks just what a browser needs of it: one request per connection
(``Connection: close``), bodies with a ``Content-Length`` (no chunked uploads),
and replies that are either bytes or a stream (Server-Sent Events). Everything
a client sends is bounded: header bytes, body bytes, the time to send them and
the connections open at once. It runs on the replica's loop, so a handler calls
the service layer directly, as a servicer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["HttpServer", "Request", "Response"]

log = logging.getLogger("capgate.console")

MAX_HEAD = 16 * 1024  # request line and headers
MAX_BODY = 64 * 1024  # a JSON action is a few hundred bytes
READ_TIMEOUT = 10.0  # seconds a client has to send its request
MAX_CONNECTIONS = 64
REASONS = {
    200: "OK",
    204: "No Content",
    302: "Found",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    421: "Misdirected Request",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case; a repeated header keeps its last value
    body: bytes = b""

    @property
    def cookies(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in self.headers.get("cookie", "").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                out[name] = value
        return out


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: AsyncIterator[bytes] | None = None  # sent as it comes, then the connection closes


Handler = Callable[[Request], Awaitable[Response]]


class _BadRequest(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


class HttpServer:
    """Serve ``handler`` on ``host:port`` (TLS with ``tls``); ``start`` returns the port."""

    def __init__(self, handler: Handler, *, security_headers: list[tuple[str, str]]) -> None:
        self._handler = handler
        self._security = security_headers
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None) -> int:
        self._server = await asyncio.start_server(
            self._connection, host, port, ssl=tls, limit=MAX_HEAD
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._open):  # streams run until their client leaves: end them
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        busy = len(self._open) >= MAX_CONNECTIONS
        self._open.add(task)
        try:
            if busy:
                await self._send(writer, _error(503, "too many connections"))
                return
            try:
                request = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT)
            except _BadRequest as e:
                await self._send(writer, _error(e.status, str(e)))
                return
            except (
                TimeoutError,
                ConnectionError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                ValueError,
            ):
                return  # a client that cannot send a request gets nothing back
            try:
                response = await self._handler(request)
            except Exception:
                log.exception("console: internal error on %s %s", request.method, request.path)
                response = _error(500, "internal error")
            await self._send(writer, response)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._open.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _send(self, writer: asyncio.StreamWriter, r: Response) -> None:
        head = [
            f"HTTP/1.1 {r.status} {REASONS.get(r.status, 'Status')}",
            f"Content-Type: {r.content_type}",
            "Connection: close",
        ]
        if r.stream is None:
            head.append(f"Content-Length: {len(r.body)}")
        head += [f"{k}: {v}" for k, v in (*self._security, *r.headers)]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + r.body)
        await writer.drain()
        if r.stream is not None:
            try:
                async for chunk in r.stream:
                    writer.write(chunk)
                    await writer.drain()
            finally:
                aclose = getattr(r.stream, "aclose", None)
                if aclose is not None:
                    await aclose()


def _error(status: int, why: str) -> Response:
    return Response(status, json.dumps({"error": why}).encode())


async def _read_request(reader: asyncio.StreamReader) -> Request:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise _BadRequest(413, "request headers too large") from None
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        raise _BadRequest(400, "bad request") from None
    line, *lines = text[:-4].split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, "bad request line")
    method, target, _ = parts
    headers: dict[str, str] = {}
    for h in lines:
        name, sep, value = h.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400, "bad header")
        headers[name.lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise _BadRequest(501, "chunked request bodies are not accepted")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        raise _BadRequest(400, "bad Content-Length")
    length = int(length_text)
    if length > MAX_BODY:
        raise _BadRequest(413, f"request body over {MAX_BODY} bytes")
    body = await reader.readexactly(length) if length else b""
    if not target.startswith("/") or not target.isascii():
        raise _BadRequest(400, "the target must be a path, in ASCII")
    url = urllib.parse.urlsplit(target)
    try:
        path = urllib.parse.unquote(url.path, errors="strict")
        query = dict(urllib.parse.parse_qsl(url.query, errors="strict"))
    except UnicodeDecodeError:
        raise _BadRequest(400, "the path is not UTF-8") from None
    return Request(method, path, query, headers, body)
