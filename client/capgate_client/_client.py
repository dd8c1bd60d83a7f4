"""``Client`` (blocking) and ``AsyncClient`` (asyncio): the same methods, typed results.

Both build every request with ``_calls`` (one ``Call[T]`` per RPC) and differ only
in how a call runs. Errors come back as capgate's own exceptions
(``PermissionDeniedError``…); a deny from Verify is not an error but a
``VerifyResult`` with ``allowed=False``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from capgate import ApprovalRule, InvalidArgumentError
from capgate_client import _calls as calls
from capgate_client._approvals import ApprovalMethods, AsyncApprovalMethods
from capgate_client._audit_client import AsyncAuditCalls, AuditCalls
from capgate_client._calls import TLS, Call, stubs_for, verify_request, verify_result
from capgate_client._errors import from_rpc_error
from capgate_client._governance import AsyncGovernanceMethods, GovernanceMethods
from capgate_client._types import (
    AgentInfo,
    Credential,
    InspectResult,
    IssuedToken,
    KeyInfo,
    PrincipalInfo,
    Proof,
    RevokeResult,
    TreeNode,
    VerifyResult,
)

__all__ = ["AsyncClient", "Client", "VerifyItem"]

T = TypeVar("T")
_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
]

VerifyItem = (
    tuple[str, str, str, str, Mapping[str, str] | None]
    | tuple[str, str, str, str, Mapping[str, str] | None, Proof | None]
    | tuple[str, str, str, str, Mapping[str, str] | None, Proof | None, Sequence[str]]
)
"""One check of a batch or stream: (token, action, resource, presenter, ctx[, proof[,
discharges]])."""


_MAX_TIMEOUT = 86400.0  # a day: each call's deadline


class _Base:
    """What both clients share: the target, the credential, TLS and the deadline."""

    def __init__(
        self, target: str, credential: str, *, tls: TLS | None = None, timeout: float = 10.0
    ) -> None:
        if not isinstance(credential, str) or not credential.strip():
            raise InvalidArgumentError("a credential is required")
        # NaN, infinities, 0 and negatives all failed every call with DEADLINE_EXCEEDED
        if type(timeout) not in (int, float) or not 0 < timeout <= _MAX_TIMEOUT:
            raise InvalidArgumentError(
                f"timeout is seconds, more than 0 and at most {_MAX_TIMEOUT:.0f}, not {timeout!r}"
            )
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {credential.strip()}"),)
        self._tls = tls

    def _options(self) -> list[tuple[str, Any]]:
        return _OPTIONS + (self._tls.options() if self._tls else [])


class Client(AuditCalls, ApprovalMethods, GovernanceMethods, _Base):
    """Blocking client for one capgate server (or load balancer).

    ``target`` is ``HOST:PORT``; ``credential`` the principal's (admin, service or
    agent); ``tls`` turns on TLS (and mTLS with a client pair); ``timeout`` is each
    call's deadline in seconds. Use as a context manager, or call ``close()``.
    """

    def __init__(
        self, target: str, credential: str, *, tls: TLS | None = None, timeout: float = 10.0
    ) -> None:
        super().__init__(target, credential, tls=tls, timeout=timeout)
        self._channel = (
            grpc.secure_channel(target, tls.credentials(), self._options())
            if tls
            else grpc.insecure_channel(target, self._options())
        )
        self._stubs = stubs_for(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; the client cannot be used afterwards."""
        self._channel.close()

    def _run(self, call: Call[T], timeout: float | None = None) -> T:
        method = getattr(self._stubs[call.service], call.method)
        try:
            reply = method(call.request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.target) from None
        return call.convert(reply)

    # -- agents and principals (admin) ---------------------------------------------------

    def create_agent(
        self,
        agent_id: str,
        grants: Sequence[str],
        *,
        max_ttl: int | None = None,
        max_depth: int | None = None,
        owner: str = "",
        description: str = "",
        public_key: bytes | None = None,
        require_proof: bool = False,
        approvals: Sequence[ApprovalRule] = (),
        rate: str = "",
    ) -> tuple[AgentInfo, str]:
        """Register an agent with a ceiling of ``grants``; returns it and its credential
        (shown once). ``require_proof``: its tokens pass only with a proof of possession;
        ``approvals``: requests that need a person's approval; ``rate``: at most N
        allowed requests per period (``"100/1m"``) on tokens it holds or delegated."""
        return self._run(
            calls.create_agent(
                agent_id,
                grants,
                max_ttl,
                max_depth,
                owner,
                description,
                public_key,
                require_proof,
                approvals,
                rate,
            )
        )

    def get_agent(self, agent_id: str) -> AgentInfo:
        """One agent (an agent may read only itself)."""
        return self._run(calls.get_agent(agent_id))

    def list_agents(self) -> list[AgentInfo]:
        """Every agent, by id."""
        return self._run(calls.list_agents())

    def update_agent(
        self,
        agent_id: str,
        *,
        grants: Sequence[str] | None = None,
        max_ttl: int | None = None,
        max_depth: int | None = None,
        description: str | None = None,
        require_proof: bool | None = None,
        approvals: Sequence[ApprovalRule] | None = None,
        rate: str | None = None,
    ) -> AgentInfo:
        """Change a ceiling, limits, whether proof is required, the approval rules
        (``()`` clears them) or the rate (``""`` lifts it); live tokens follow at their
        next verification."""
        return self._run(
            calls.update_agent(
                agent_id, grants, max_ttl, max_depth, description, require_proof, approvals, rate
            )
        )

    def suspend_agent(self, agent_id: str) -> AgentInfo:
        """Deny every token the agent appears in, until resumed."""
        return self._run(calls.agent_action("SuspendAgent", agent_id))

    def resume_agent(self, agent_id: str) -> AgentInfo:
        """Undo ``suspend_agent``."""
        return self._run(calls.agent_action("ResumeAgent", agent_id))

    def revoke_all(self, agent_id: str) -> AgentInfo:
        """Deny every token issued to or delegated through the agent so far."""
        return self._run(calls.agent_action("RevokeAllTokens", agent_id))

    def add_public_key(self, agent_id: str, public_key: bytes) -> AgentInfo:
        """Register an Ed25519 key the agent signs offline delegations with."""
        return self._run(calls.add_public_key(agent_id, public_key))

    def remove_public_key(self, agent_id: str, key_id: str) -> AgentInfo:
        """Retire a key; delegations signed with it deny."""
        return self._run(calls.remove_public_key(agent_id, key_id))

    def delete_agent(self, agent_id: str) -> None:
        """Delete an agent; every token it holds or passed on denies for good."""
        self._run(calls.delete_agent(agent_id))

    def create_principal(self, principal_id: str, role: str) -> Credential:
        """A service (may verify) or another admin; returns its credential (shown once)."""
        return self._run(calls.create_principal(principal_id, role))

    def list_principals(self) -> list[PrincipalInfo]:
        """Every principal (admins, services, agents) and whether it is disabled."""
        return self._run(calls.list_principals())

    def disable_principal(self, principal_id: str) -> PrincipalInfo:
        """Refuse every call with this principal's credential, at once."""
        return self._run(calls.principal_action("DisablePrincipal", principal_id))

    def enable_principal(self, principal_id: str) -> PrincipalInfo:
        """Undo ``disable_principal``."""
        return self._run(calls.principal_action("EnablePrincipal", principal_id))

    def rotate_credential(self, principal_id: str) -> Credential:
        """A new credential for the principal; the old one stops working at once."""
        return self._run(calls.rotate_credential(principal_id))

    # -- tokens -----------------------------------------------------------------------

    def issue(
        self, grant: str, *, ttl: int | None = None, caveats: Iterable[str] = ()
    ) -> IssuedToken:
        """As an agent: a token for ``grant`` (``ACTIONS:GLOB``) within its ceiling."""
        return self._run(calls.issue(grant, ttl, caveats))

    def attenuate(
        self, token: str, caveats: Iterable[str], approvals: Sequence[ApprovalRule] = ()
    ) -> IssuedToken:
        """Append caveats, then approval caveats (the same as ``Token.attenuate`` and
        ``Token.require_approval`` offline)."""
        return self._run(calls.attenuate(token, caveats, approvals))

    def delegate(
        self,
        token: str,
        to: str,
        caveats: Iterable[str] = (),
        approvals: Sequence[ApprovalRule] = (),
    ) -> IssuedToken:
        """As the holder: hand the token to agent ``to``, narrowed by ``caveats`` and
        ``approvals`` (the server adds the agent's own approval rules too)."""
        return self._run(calls.delegate(token, to, caveats, approvals))

    def inspect(self, token: str) -> InspectResult:
        """What the server knows of a valid token (an invalid one: just "invalid")."""
        return self._run(calls.inspect(token))

    def revoke(self, token_or_id: str, reason: str = "") -> RevokeResult:
        """Revoke a token (its own hop) or a token/delegation id; cascades below it."""
        return self._run(calls.revoke(token_or_id, reason))

    def tree(self, node_id: str) -> TreeNode:
        """The delegation tree below a token or delegation id, as the server saw it."""
        return self._run(calls.tree(node_id))

    # -- verification -------------------------------------------------------------------

    def verify(
        self,
        token: str,
        action: str,
        resource: str,
        *,
        presenter: str = "",
        ctx: Mapping[str, str] | None = None,
        proof: Proof | None = None,
        discharges: Sequence[str] = (),
    ) -> VerifyResult:
        """May ``presenter`` do ``action`` on ``resource`` with ``token``? A deny is a
        result (``allowed=False`` and the reason), not an exception. With ``proof`` (the
        agent's proof of possession) the server checks who presents; ``presenter`` may
        then be left empty. ``discharges``: of the token's approval caveats, for
        exactly this request (an allow then spends one of the approval's uses)."""
        return self._run(calls.verify(token, action, resource, presenter, ctx, proof, discharges))

    def verify_batch(self, items: Sequence[VerifyItem]) -> list[VerifyResult]:
        """Many checks in one call, answered in order."""
        return self._run(calls.verify_batch([verify_request(*item) for item in items]))

    def verify_stream(self, items: Iterable[VerifyItem]) -> Iterator[VerifyResult]:
        """Checks over one stream: each result as soon as it is decided, in order."""
        requests = (verify_request(*item) for item in items)
        try:
            for reply in self._stubs["verify"].VerifyStream(requests, metadata=self._metadata):
                yield verify_result(reply)
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.target) from None

    # -- root keys and audit (admin) ----------------------------------------------------

    def list_keys(self) -> list[KeyInfo]:
        """The root keys, and which one signs."""
        return self._run(calls.list_keys())

    def rotate_key(self) -> KeyInfo:
        """A new signing key; older keys verify until retired."""
        return self._run(calls.rotate_key())

    def retire_key(self, key_id: str) -> KeyInfo:
        """Retire a root key: every token signed with it denies."""
        return self._run(calls.retire_key(key_id))


class AsyncClient(AsyncAuditCalls, AsyncApprovalMethods, AsyncGovernanceMethods, _Base):
    """asyncio client with the methods of ``Client``: ``await c.verify(...)``.

    The channel is opened on first use, in the event loop that uses it, so a
    client may be created at import time (the usual FastAPI pattern). Use as an
    async context manager, or ``await close()``.
    """

    def __init__(
        self, target: str, credential: str, *, tls: TLS | None = None, timeout: float = 10.0
    ) -> None:
        super().__init__(target, credential, tls=tls, timeout=timeout)
        self._channel: grpc.aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stubs: dict[str, Any] = {}

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (a later call opens a new one)."""
        channel, self._channel, self._stubs = self._channel, None, {}
        if channel is not None:
            await channel.close()

    def _stubs_here(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        if self._channel is None or self._loop is not loop:
            tls = self._tls
            self._channel = (
                grpc.aio.secure_channel(self.target, tls.credentials(), self._options())
                if tls
                else grpc.aio.insecure_channel(self.target, self._options())
            )
            self._loop, self._stubs = loop, stubs_for(self._channel)
        return self._stubs

    async def _run(self, call: Call[T], timeout: float | None = None) -> T:
        method = getattr(self._stubs_here()[call.service], call.method)
        try:
            reply = await method(
                call.request, timeout=timeout or self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.target) from None
        return call.convert(reply)

    # -- agents and principals (admin) ---------------------------------------------------

    async def create_agent(
        self,
        agent_id: str,
        grants: Sequence[str],
        *,
        max_ttl: int | None = None,
        max_depth: int | None = None,
        owner: str = "",
        description: str = "",
        public_key: bytes | None = None,
        require_proof: bool = False,
        approvals: Sequence[ApprovalRule] = (),
        rate: str = "",
    ) -> tuple[AgentInfo, str]:
        """See ``Client.create_agent``."""
        return await self._run(
            calls.create_agent(
                agent_id,
                grants,
                max_ttl,
                max_depth,
                owner,
                description,
                public_key,
                require_proof,
                approvals,
                rate,
            )
        )

    async def get_agent(self, agent_id: str) -> AgentInfo:
        """See ``Client.get_agent``."""
        return await self._run(calls.get_agent(agent_id))

    async def list_agents(self) -> list[AgentInfo]:
        """See ``Client.list_agents``."""
        return await self._run(calls.list_agents())

    async def update_agent(
        self,
        agent_id: str,
        *,
        grants: Sequence[str] | None = None,
        max_ttl: int | None = None,
        max_depth: int | None = None,
        description: str | None = None,
        require_proof: bool | None = None,
        approvals: Sequence[ApprovalRule] | None = None,
        rate: str | None = None,
    ) -> AgentInfo:
        """See ``Client.update_agent``."""
        return await self._run(
            calls.update_agent(
                agent_id, grants, max_ttl, max_depth, description, require_proof, approvals, rate
            )
        )

    async def suspend_agent(self, agent_id: str) -> AgentInfo:
        """See ``Client.suspend_agent``."""
        return await self._run(calls.agent_action("SuspendAgent", agent_id))

    async def resume_agent(self, agent_id: str) -> AgentInfo:
        """See ``Client.resume_agent``."""
        return await self._run(calls.agent_action("ResumeAgent", agent_id))

    async def revoke_all(self, agent_id: str) -> AgentInfo:
        """See ``Client.revoke_all``."""
        return await self._run(calls.agent_action("RevokeAllTokens", agent_id))

    async def add_public_key(self, agent_id: str, public_key: bytes) -> AgentInfo:
        """See ``Client.add_public_key``."""
        return await self._run(calls.add_public_key(agent_id, public_key))

    async def remove_public_key(self, agent_id: str, key_id: str) -> AgentInfo:
        """See ``Client.remove_public_key``."""
        return await self._run(calls.remove_public_key(agent_id, key_id))

    async def delete_agent(self, agent_id: str) -> None:
        """See ``Client.delete_agent``."""
        await self._run(calls.delete_agent(agent_id))

    async def create_principal(self, principal_id: str, role: str) -> Credential:
        """See ``Client.create_principal``."""
        return await self._run(calls.create_principal(principal_id, role))

    async def list_principals(self) -> list[PrincipalInfo]:
        """See ``Client.list_principals``."""
        return await self._run(calls.list_principals())

    async def disable_principal(self, principal_id: str) -> PrincipalInfo:
        """See ``Client.disable_principal``."""
        return await self._run(calls.principal_action("DisablePrincipal", principal_id))

    async def enable_principal(self, principal_id: str) -> PrincipalInfo:
        """See ``Client.enable_principal``."""
        return await self._run(calls.principal_action("EnablePrincipal", principal_id))

    async def rotate_credential(self, principal_id: str) -> Credential:
        """See ``Client.rotate_credential``."""
        return await self._run(calls.rotate_credential(principal_id))

    # -- tokens -----------------------------------------------------------------------

    async def issue(
        self, grant: str, *, ttl: int | None = None, caveats: Iterable[str] = ()
    ) -> IssuedToken:
        """See ``Client.issue``."""
        return await self._run(calls.issue(grant, ttl, caveats))

    async def attenuate(
        self, token: str, caveats: Iterable[str], approvals: Sequence[ApprovalRule] = ()
    ) -> IssuedToken:
        """See ``Client.attenuate``."""
        return await self._run(calls.attenuate(token, caveats, approvals))

    async def delegate(
        self,
        token: str,
        to: str,
        caveats: Iterable[str] = (),
        approvals: Sequence[ApprovalRule] = (),
    ) -> IssuedToken:
        """See ``Client.delegate``."""
        return await self._run(calls.delegate(token, to, caveats, approvals))

    async def inspect(self, token: str) -> InspectResult:
        """See ``Client.inspect``."""
        return await self._run(calls.inspect(token))

    async def revoke(self, token_or_id: str, reason: str = "") -> RevokeResult:
        """See ``Client.revoke``."""
        return await self._run(calls.revoke(token_or_id, reason))

    async def tree(self, node_id: str) -> TreeNode:
        """See ``Client.tree``."""
        return await self._run(calls.tree(node_id))

    # -- verification -------------------------------------------------------------------

    async def verify(
        self,
        token: str,
        action: str,
        resource: str,
        *,
        presenter: str = "",
        ctx: Mapping[str, str] | None = None,
        proof: Proof | None = None,
        discharges: Sequence[str] = (),
    ) -> VerifyResult:
        """See ``Client.verify``."""
        return await self._run(
            calls.verify(token, action, resource, presenter, ctx, proof, discharges)
        )

    async def verify_batch(self, items: Sequence[VerifyItem]) -> list[VerifyResult]:
        """See ``Client.verify_batch``."""
        return await self._run(calls.verify_batch([verify_request(*item) for item in items]))

    async def verify_stream(
        self, items: Iterable[VerifyItem] | AsyncIterable[VerifyItem]
    ) -> AsyncIterator[VerifyResult]:
        """See ``Client.verify_stream``; ``items`` may be an async iterable."""

        async def requests() -> AsyncIterator[Any]:
            if isinstance(items, AsyncIterable):
                async for item in items:
                    yield verify_request(*item)
            else:
                for item in items:
                    yield verify_request(*item)

        call = self._stubs_here()["verify"].VerifyStream(requests(), metadata=self._metadata)
        try:
            async for reply in call:
                yield verify_result(reply)
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.target) from None

    # -- root keys and audit (admin) ----------------------------------------------------

    async def list_keys(self) -> list[KeyInfo]:
        """See ``Client.list_keys``."""
        return await self._run(calls.list_keys())

    async def rotate_key(self) -> KeyInfo:
        """See ``Client.rotate_key``."""
        return await self._run(calls.rotate_key())

    async def retire_key(self, key_id: str) -> KeyInfo:
        """See ``Client.retire_key``."""
        return await self._run(calls.retire_key(key_id))
