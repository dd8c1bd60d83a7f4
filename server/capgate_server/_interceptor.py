"""Authentication, principal state and role checks for every RPC, as one interceptor.

The credential travels as ``authorization: Bearer <credential>`` metadata. Only
the standard health and reflection services answer without one. A disabled
principal is refused everything; a suspended agent may only read its own record.
The principal is handed to the servicer through ``CALLER`` (a context variable
set for the call). What a call may cost (message bytes, calls in flight) is
``Admission``'s: it answers refused calls without reading their bodies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc

from capgate import AgentStatus, AuthenticationError, CapgateError, PermissionDeniedError
from capgate_server._admission import CALLER, Admission
from capgate_server._replica import Replica
from capgate_server.store import Role

__all__ = ["CALLER", "POLICY", "Authenticator"]

_ADMIN = frozenset({Role.ADMIN})
# enum members read per call: a class lookup each, which the hot path need not pay
_AGENT_ROLE, _ACTIVE = Role.AGENT, AgentStatus.ACTIVE
_AGENT = frozenset({Role.AGENT})
_ANY = frozenset({Role.ADMIN, Role.SERVICE, Role.AGENT})  # approvers: approvals only
_VERIFIERS = _ANY  # agents may verify, but only on their own behalf
_APPROVERS = frozenset({Role.ADMIN, Role.APPROVER})
_OPERATORS = frozenset({Role.ADMIN, Role.OPERATOR})  # the operator's share of admin's RPCs

# Who may call what; a method missing here is refused (fail closed).
POLICY: Mapping[str, frozenset[Role]] = {
    **{
        f"/capgate.v1.AgentService/{m}": _ADMIN
        for m in (
            "CreateAgent",
            "AddPublicKey",
            "RemovePublicKey",
            "DeleteAgent",
            "CreatePrincipal",
            "ListPrincipals",
            "DisablePrincipal",
            "EnablePrincipal",
            "RotateCredential",
        )
    },
    **{
        f"/capgate.v1.AgentService/{m}": _OPERATORS
        for m in ("ListAgents", "UpdateAgent", "SuspendAgent", "ResumeAgent", "RevokeAllTokens")
    },
    "/capgate.v1.AgentService/GetAgent": frozenset({Role.ADMIN, Role.OPERATOR, Role.AGENT}),
    "/capgate.v1.TokenService/IssueToken": _AGENT,
    "/capgate.v1.TokenService/DelegateToken": _AGENT,
    "/capgate.v1.TokenService/AttenuateToken": _ANY,
    "/capgate.v1.TokenService/InspectToken": _ANY,
    "/capgate.v1.TokenService/RevokeToken": frozenset({Role.ADMIN, Role.OPERATOR, Role.AGENT}),
    "/capgate.v1.TokenService/GetTokenTree": frozenset({Role.ADMIN, Role.OPERATOR, Role.AGENT}),
    "/capgate.v1.VerifierService/Verify": _VERIFIERS,
    "/capgate.v1.VerifierService/VerifyBatch": _VERIFIERS,
    "/capgate.v1.VerifierService/VerifyStream": _VERIFIERS,
    **{
        f"/capgate.v1.AuditService/{m}": _OPERATORS
        for m in ("ListEvents", "WatchEvents", "VerifyLedger", "GetCheckpoint")
    },
    **{
        f"/capgate.v1.GovernanceService/{m}": _ADMIN
        for m in ("GetUsage", "Review", "ListAlerts", "WatchAlerts", "SetPolicy", "GetPolicy")
    },
    "/capgate.v1.KeyService/ListKeys": _ADMIN,
    "/capgate.v1.KeyService/RotateKey": _ADMIN,
    "/capgate.v1.KeyService/RetireKey": _ADMIN,
    # Envoy's ext_authz (served with --ext-authz): a proxy speaks for what it saw, like a
    # service; an agent could put any peer principal in the request, so it may not
    "/envoy.service.auth.v3.Authorization/Check": frozenset({Role.ADMIN, Role.SERVICE}),
    # approvals: agents ask for themselves, services and admins for the presenter they
    # name; approvers and admins decide; each reads what it may (``Approvals``)
    "/capgate.v1.ApprovalService/RequestApproval": _ANY,
    "/capgate.v1.ApprovalService/GetApproval": frozenset(Role),
    "/capgate.v1.ApprovalService/ListApprovals": frozenset(Role),
    "/capgate.v1.ApprovalService/WatchApprovals": _APPROVERS,
    "/capgate.v1.ApprovalService/DecideApproval": _APPROVERS,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": frozenset(Role),
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": frozenset(Role),
}
# Open without a credential: health (for load balancers) and reflection, which tells
# only what the shipped .proto files already say (for grpcurl and other tools).
_OPEN_PREFIX = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# what to do instead, for the refusals people meet first
_HINTS = {
    "/capgate.v1.TokenService/IssueToken": ": tokens are issued to agents; use an agent's "
    "credential (e.g. --credential-file AGENT.cred)",
    "/capgate.v1.TokenService/DelegateToken": ": the holder delegates; use the holding "
    "agent's credential",
}
# A suspended agent keeps its credential, but may only read its own record (to see why).
_WHILE_SUSPENDED = frozenset({"/capgate.v1.AgentService/GetAgent"})


class Authenticator(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        replica: Replica,
        admission: Admission,
        policy: Mapping[str, frozenset[Role]] = POLICY,
        refuse: Callable[[str], str | None] | None = None,
    ) -> None:
        self._replica = replica
        self._admission = admission
        self._policy = policy
        self._refuse = refuse  # e.g. a verifier-only replica refusing admin RPCs

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        method: str = details.method
        handler = await continuation(details)
        if handler is None:
            return None
        if method.startswith(_OPEN_PREFIX):
            return self._admission.open(handler, method)
        error: CapgateError | None = None
        if self._refuse is not None and (why := self._refuse(method)) is not None:
            error = PermissionDeniedError(why)
        roles = self._policy.get(method)
        if error is None and roles is None:
            error = PermissionDeniedError(f"{method} is not open to any principal")
        principal = None
        if error is None:
            credentials = [
                value.removeprefix("Bearer ").strip()
                for key, value in details.invocation_metadata or ()
                if key == "authorization"
            ]
            # One credential: with two, a proxy that checks the first and a server that
            # took the last would each see another principal.
            credential = credentials[0] if len(credentials) == 1 else ""
            try:
                principal = await self._replica.authenticate(credential) if credential else None
            except CapgateError as e:  # the store cannot say who this is: fail closed, say why
                principal, error = None, e
            if len(credentials) > 1:
                error = AuthenticationError("more than one authorization header: send one")
            elif error is not None:
                pass
            elif principal is None:
                error = AuthenticationError("missing or unknown credential")
            elif principal.disabled:
                error = AuthenticationError(f"the credential of {principal.id!r} is disabled")
            elif roles is not None and principal.role not in roles:
                error = PermissionDeniedError(
                    f"{method.rsplit('/', 1)[-1]} is not open to the {principal.role} role"
                    + _HINTS.get(method, "")
                )
            elif (
                principal.role is _AGENT_ROLE
                and method not in _WHILE_SUSPENDED
                and (
                    (agent := self._replica.agents.get(principal.id)) is None
                    or agent.status is not _ACTIVE
                )
            ):
                state = agent.status if agent is not None else "not registered"
                error = PermissionDeniedError(
                    f"agent {principal.id!r} is {state}: it may call nothing but GetAgent"
                )
            else:
                error = self._admission.busy(principal, method)
        if isinstance(error, AuthenticationError):  # failed logins are audited (tallied)
            who = principal.id if principal is not None else "unknown"
            self._replica.audit.refusal(
                "auth.failed",
                who,
                method.rsplit("/", 1)[-1],
                "unauthenticated",
                error.message,
                self._replica.clock(),
            )
        if error is not None:
            return self._admission.refuse(handler, error)
        assert principal is not None
        return self._admission.admit(handler, method, principal)
