"""``Presenter``: the agent's side of presenting a token to a service, in one call.

Every request carries ``authorization: Capgate <token>`` and, when the agent
has its key at hand, a fresh ``capgate-proof`` signed for that request
(``capgate.prove_possession``)::

    presenter = Presenter(token, key)              # key: Ed25519 private key (or PEM bytes)
    httpx.get(url, auth=presenter)                 # HTTP: httpx or requests, as their auth
    stub.Get(req, metadata=presenter.grpc_metadata("/files.v1.Files/Get"))
    channel = grpc.intercept_channel(channel, presenter.grpc_interceptor())  # every call
    await mcp.call_tool("read_file", args, meta=presenter.mcp_meta("read_file"))
    presenter.headers("GET", "/reports/q3")        # any other HTTP client
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from capgate import (
    PROOF_HEADER,
    TOKEN_HEADER,
    Clock,
    InvalidArgumentError,
    Token,
    load_private_key,
    prove_possession,
    system_clock,
    token_header,
)

__all__ = ["MCP_PROOF_KEY", "MCP_TOKEN_KEY", "Presenter"]

# Where an MCP tool call carries them: the request's ``_meta``.
MCP_TOKEN_KEY = "capgate/token"  # noqa: S105 - a key name, not a secret
MCP_PROOF_KEY = "capgate/proof"
MCP_METHOD = "tools/call"
GRPC_METHOD = "POST"  # gRPC is an HTTP/2 POST to /package.Service/Method


class Presenter:
    """Presents ``token`` for an agent; with ``key`` (its registered Ed25519 private key,
    or PEM/OpenSSH bytes of it) each request also gets a one-time proof of possession,
    for the service ``audience`` (the capgate principal id that service verifies with;
    behind Envoy, Envoy's): no other service can spend it."""

    def __init__(
        self,
        token: Token | str,
        key: Ed25519PrivateKey | bytes | None = None,
        *,
        audience: str | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self._token = token if isinstance(token, Token) else Token.parse(token.strip())
        self._header = token_header(self._token)
        if isinstance(key, bytes):
            key = load_private_key(key)
        if key is not None and not isinstance(key, Ed25519PrivateKey):
            raise InvalidArgumentError("the key must be an Ed25519 private key")
        if key is not None and not audience:
            raise InvalidArgumentError(
                "a proof is for one service: pass audience= (the "
                "principal id the service verifies with)"
            )
        self._key = key
        self._audience = audience or ""
        self._clock = clock

    @property
    def token(self) -> str:
        return self._header.split(" ", 1)[1]

    def proof(self, method: str, target: str) -> str | None:
        """A fresh ``capgate-proof`` value for one request (None without a key)."""
        if self._key is None:
            return None
        return prove_possession(
            self._token, self._key, method, target, audience=self._audience, clock=self._clock
        )

    def headers(self, method: str, target: str) -> dict[str, str]:
        """The headers for one HTTP request: ``method`` and ``target`` (the path with its
        query) exactly as sent."""
        out = {TOKEN_HEADER: self._header}
        proof = self.proof(method, target)
        if proof is not None:
            out[PROOF_HEADER] = proof
        return out

    def grpc_metadata(self, method: str) -> list[tuple[str, str]]:
        """The metadata for one gRPC call to ``method`` (``/package.Service/Method``)."""
        return list(self.headers(GRPC_METHOD, method).items())

    def mcp_meta(self, tool: str) -> dict[str, str]:
        """The ``_meta`` of one MCP ``tools/call`` to ``tool``."""
        out = {MCP_TOKEN_KEY: self.token}
        proof = self.proof(MCP_METHOD, tool)
        if proof is not None:
            out[MCP_PROOF_KEY] = proof
        return out

    def __call__(self, request: Any) -> Any:
        """HTTP clients' auth hook (httpx ``auth=``, requests ``auth=``): sets the headers
        for the request as it will be sent."""
        raw_path = getattr(getattr(request, "url", None), "raw_path", None)  # httpx
        target: object = (
            raw_path.decode("ascii", "replace")
            if isinstance(raw_path, bytes)
            else getattr(request, "path_url", None)
        )  # requests
        if not isinstance(target, str) or not isinstance(request.method, str):
            raise InvalidArgumentError("not an httpx or requests request")
        for key, value in self.headers(request.method, target).items():
            request.headers[key] = value
        return request

    def grpc_interceptor(self) -> _ClientInterceptor:
        """A client interceptor for ``grpc.intercept_channel``: every call is presented."""
        return _ClientInterceptor(self.grpc_metadata)

    def grpc_aio_interceptors(self) -> list[Any]:
        """Interceptors for ``grpc.aio.insecure_channel(..., interceptors=...)`` (or
        ``secure_channel``): every call is presented."""
        return [kind(self.grpc_metadata) for kind in _AIO_KINDS]


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


def _with_metadata(details: Any, presented: Callable[[str], list[tuple[str, str]]]) -> Any:
    method = details.method
    name = method.decode("ascii") if isinstance(method, bytes) else str(method)
    # the caller's own metadata stays; ours replaces any token or proof it set
    mine = presented(name)
    keys = {k for k, _ in mine}
    metadata = [(k, v) for k, v in (details.metadata or ()) if k not in keys] + mine
    return metadata, name


class _ClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, presented: Callable[[str], list[tuple[str, str]]]) -> None:
        self._presented = presented

    def _details(self, details: Any) -> _Details:
        metadata, _ = _with_metadata(details, self._presented)
        return _Details(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(
        self, continuation: Any, details: Any, request_iterator: Iterator[Any]
    ) -> Any:
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Iterator[Any]
    ) -> Any:
        return continuation(self._details(details), request_iterator)


class _AioBase:
    def __init__(self, presented: Callable[[str], list[tuple[str, str]]]) -> None:
        self._presented = presented

    def _details(self, details: Any) -> Any:
        metadata, _ = _with_metadata(details, self._presented)
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*metadata),
            details.credentials,
            details.wait_for_ready,
        )


class _AioUnaryUnary(_AioBase, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AioUnaryStream(_AioBase, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AioStreamUnary(_AioBase, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(details), request_iterator)


class _AioStreamStream(_AioBase, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(details), request_iterator)


_AIO_KINDS = (_AioUnaryUnary, _AioUnaryStream, _AioStreamUnary, _AioStreamStream)
