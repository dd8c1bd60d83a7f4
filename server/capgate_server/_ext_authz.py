"""Envoy's external authorization: capgate answers ``envoy.service.auth.v3.Authorization/Check``.

Envoy (or an Istio sidecar) asks before it forwards a request, calling as a
service principal (its credential in the gRPC ``initial_metadata``). The check
is read from what Envoy itself saw, never from anything the client could set
for the purpose:

- the token: the configured header (``authorization: Capgate <token>`` by default);
- the presenter: the peer's mTLS principal (``source.principal``: the URI SAN,
  a SPIFFE id) with the configured prefix removed, and/or the agent that signed a
  ``capgate-proof`` header for the request's method and path;
- the action: the route's context extension ``capgate_action``, else the HTTP
  method's (``capgate.http_action``; a method without one is denied);
- the resource: the request's path, without its query.

An allow lets the request through with ``capgate-agent`` (the holder) set on
it, replacing whatever the client sent under that name. A deny answers 403
with the code in ``capgate-deny`` (429 for a spent budget); a replica that
cannot vouch for its state (stale, or its store unreachable for a proof)
answers 503. Both fail closed.
This module needs the published Envoy stubs (``xds-protos``: ``capgate[envoy]``).
"""

from __future__ import annotations

from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from capgate import (
    DENY_HEADER,
    PROOF_HEADER,
    TOKEN_HEADER,
    Decision,
    DenyCode,
    InvalidArgumentError,
    check_id,
    http_action,
    http_resource,
    presented_token,
)
from capgate_server._interceptor import CALLER
from capgate_server._replica import Settings
from capgate_server._rpc import rpc
from capgate_server._verification import Presented, Verification

__all__ = ["ACTION_EXTENSION", "AGENT_HEADER", "register_ext_authz"]

ACTION_EXTENSION = "capgate_action"  # per-route: check_settings.context_extensions
AGENT_HEADER = "capgate-agent"  # set on allowed requests: the agent that holds the token
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE
    )


def _headers(http: Any) -> dict[str, str]:
    """Envoy sends lower-case keys in ``headers``, or in ``header_map`` when asked to
    send raw values; repeated headers arrive joined with commas."""
    if http.headers:
        return dict(http.headers)
    out: dict[str, str] = {}
    for h in http.header_map.headers:
        value = h.value or h.raw_value.decode("utf-8", "replace")
        key = h.key.lower()
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


def deny_response(d: Decision) -> external_auth_pb2.CheckResponse:
    if d.code is DenyCode.UNAVAILABLE:
        status, code = http_status_pb2.StatusCode.ServiceUnavailable, code_pb2.UNAVAILABLE
    elif d.code is DenyCode.BUDGET_EXHAUSTED:
        status, code = http_status_pb2.StatusCode.TooManyRequests, code_pb2.RESOURCE_EXHAUSTED
    else:
        status, code = http_status_pb2.StatusCode.Forbidden, code_pb2.PERMISSION_DENIED
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code, message=d.reason),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=status),
            headers=[
                _header(DENY_HEADER, str(d.code)),
                _header("content-type", "text/plain; charset=utf-8"),
            ],
            body=f"denied by capgate ({d.code}): {d.reason}\n",
        ),
    )


def allow_response(d: Decision) -> external_auth_pb2.CheckResponse:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=external_auth_pb2.OkHttpResponse(headers=[_header(AGENT_HEADER, d.chain[-1])]),
    )


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, verification: Verification, settings: Settings) -> None:
        self.verification = verification
        self._token_header = settings.ext_authz_header.lower()
        self._prefix = settings.spiffe_prefix

    def _presenter(self, principal: str) -> str:
        if not self._prefix or not principal.startswith(self._prefix):
            return ""
        try:
            return check_id(principal[len(self._prefix) :], "agent id")
        except Exception:  # not an agent id: no one is presented
            return ""

    @rpc
    async def Check(self, request: Any, context: Any) -> Any:
        caller = CALLER.get()
        attributes = request.attributes
        http = attributes.request.http
        headers = _headers(http)
        raw = headers.get(self._token_header, "")
        token = presented_token(raw)
        if token is None and self._token_header != TOKEN_HEADER:
            token = raw.strip() or None  # a header of its own may carry the bare token
        if token is None or not token or any(c.isspace() for c in token):
            return deny_response(
                Decision(
                    False, DenyCode.MISSING_TOKEN, f"no capgate token in {self._token_header!r}"
                )
            )
        action = attributes.context_extensions.get(ACTION_EXTENSION) or http_action(http.method)
        if not action:
            return deny_response(
                Decision(
                    False,
                    DenyCode.INVALID_REQUEST,
                    f"no action for HTTP method {http.method!r} (set {ACTION_EXTENSION!r} "
                    "in the route's context extensions)",
                )
            )
        try:  # what a server behind Envoy would serve, or a deny: never a guess
            resource = http_resource(http.path)
        except InvalidArgumentError as e:
            return deny_response(
                Decision(False, DenyCode.INVALID_REQUEST, f"path {http.path[:200]!r}: {e.message}")
            )
        presenter = self._presenter(attributes.source.principal)
        proof = headers.get(PROOF_HEADER, "")
        v = self.verification
        if proof:
            d = (
                await v.verify_proven(
                    caller,
                    [
                        Presented(
                            token, action, resource, presenter, {}, proof, http.method, http.path
                        )
                    ],
                )
            )[0]
        else:
            d = await v.verify(caller, token, action, resource, presenter, {})
        return allow_response(d) if d.allowed else deny_response(d)


def register_ext_authz(
    server: grpc.aio.Server, verification: Verification, settings: Settings
) -> str:
    """Serve Check on ``server``; returns the service's full name."""
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        AuthorizationServicer(verification, settings), server
    )
    return str(external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name)
