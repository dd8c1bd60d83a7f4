"""``Client`` (blocking) and ``AsyncClient`` (asyncio): the same methods, typed results.

Errors come back as capgate's own exceptions (``PermissionDeniedError``…);
a deny from Verify is not an error but a ``VerifyResult`` with ``allowed=False``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc

from capgate import InvalidArgumentError
from capgate_client import _calls as calls
from capgate_client._calls import TLS, Call, stubs_for, verify_request
from capgate_client._errors import from_rpc_error
from capgate_client._types import (
    AgentInfo,
    AuditRecord,
    Credential,
    InspectResult,
    IssuedToken,
    KeyInfo,
    PrincipalInfo,
    RevokeResult,
    TreeNode,
    VerifyResult,
)

__all__ = ["AsyncClient", "Client", "VerifyItem"]

_OPTIONS = [("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.max_send_message_length", 16 * 1024 * 1024)]

# One Verify of a batch: (token, action, resource, presenter, ctx)
VerifyItem = tuple[str, str, str, str, Mapping[str, str] | None]


class _Base:
    def __init__(self, target: str, credential: str, *, tls: TLS | None = None,
                 timeout: float = 10.0) -> None:
        if not credential or not credential.strip():
            raise InvalidArgumentError("a credential is required")
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {credential.strip()}"),)
        self._tls = tls

    def _options(self) -> list[tuple[str, Any]]:
        return _OPTIONS + (self._tls.options() if self._tls else [])

    @staticmethod
    def _batch(items: Sequence[VerifyItem]) -> Call:
        return calls.verify_batch([verify_request(*item) for item in items])


class Client(_Base):
    """Blocking client. Use as a context manager, or call ``close()``."""

    def __init__(self, target: str, credential: str, *, tls: TLS | None = None,
                 timeout: float = 10.0) -> None:
        super().__init__(target, credential, tls=tls, timeout=timeout)
        self._channel = (grpc.secure_channel(target, tls.credentials(), self._options()) if tls
                         else grpc.insecure_channel(target, self._options()))
        self._stubs = stubs_for(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _run(self, call: Call, timeout: float | None = None) -> Any:
        method = getattr(self._stubs[call.service], call.method)
        try:
            reply = method(call.request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        return call.convert(reply)

    # agents
    def create_agent(self, agent_id: str, grants: Sequence[str], *, max_ttl: int | None = None,
                     max_depth: int | None = None, owner: str = "", description: str = "",
                     public_key: bytes | None = None) -> tuple[AgentInfo, str]:
        return self._run(calls.create_agent(agent_id, grants, max_ttl, max_depth, owner,
                                            description, public_key))

    def get_agent(self, agent_id: str) -> AgentInfo:
        return self._run(calls.get_agent(agent_id))

    def list_agents(self) -> list[AgentInfo]:
        return self._run(calls.list_agents())

    def update_agent(self, agent_id: str, *, grants: Sequence[str] | None = None,
                     max_ttl: int | None = None, max_depth: int | None = None,
                     description: str | None = None) -> AgentInfo:
        return self._run(calls.update_agent(agent_id, grants, max_ttl, max_depth, description))

    def suspend_agent(self, agent_id: str) -> AgentInfo:
        return self._run(calls.agent_action("SuspendAgent", agent_id))

    def resume_agent(self, agent_id: str) -> AgentInfo:
        return self._run(calls.agent_action("ResumeAgent", agent_id))

    def revoke_all(self, agent_id: str) -> AgentInfo:
        return self._run(calls.agent_action("RevokeAllTokens", agent_id))

    def add_public_key(self, agent_id: str, public_key: bytes) -> AgentInfo:
        return self._run(calls.add_public_key(agent_id, public_key))

    def remove_public_key(self, agent_id: str, key_id: str) -> AgentInfo:
        return self._run(calls.remove_public_key(agent_id, key_id))

    def delete_agent(self, agent_id: str) -> None:
        """Delete an agent; every token it holds or passed on denies for good."""
        self._run(calls.delete_agent(agent_id))

    def create_principal(self, principal_id: str, role: str) -> Credential:
        return self._run(calls.create_principal(principal_id, role))

    def list_principals(self) -> list[PrincipalInfo]:
        return self._run(calls.list_principals())

    def disable_principal(self, principal_id: str) -> PrincipalInfo:
        return self._run(calls.principal_action("DisablePrincipal", principal_id))

    def enable_principal(self, principal_id: str) -> PrincipalInfo:
        return self._run(calls.principal_action("EnablePrincipal", principal_id))

    def rotate_credential(self, principal_id: str) -> Credential:
        """A new credential for the principal; the old one stops working at once."""
        return self._run(calls.rotate_credential(principal_id))

    # tokens
    def issue(self, grant: str, *, ttl: int | None = None,
              caveats: Iterable[str] = ()) -> IssuedToken:
        return self._run(calls.issue(grant, ttl, caveats))

    def attenuate(self, token: str, caveats: Iterable[str]) -> IssuedToken:
        return self._run(calls.attenuate(token, caveats))

    def delegate(self, token: str, to: str, caveats: Iterable[str] = ()) -> IssuedToken:
        return self._run(calls.delegate(token, to, caveats))

    def inspect(self, token: str) -> InspectResult:
        return self._run(calls.inspect(token))

    def revoke(self, token_or_id: str, reason: str = "") -> RevokeResult:
        return self._run(calls.revoke(token_or_id, reason))

    def tree(self, node_id: str) -> TreeNode:
        return self._run(calls.tree(node_id))

    # verification
    def verify(self, token: str, action: str, resource: str, *, presenter: str = "",
               ctx: Mapping[str, str] | None = None) -> VerifyResult:
        return self._run(calls.verify(token, action, resource, presenter, ctx))

    def verify_batch(self, items: Sequence[VerifyItem]) -> list[VerifyResult]:
        return self._run(self._batch(items))

    # root keys
    def list_keys(self) -> list[KeyInfo]:
        return self._run(calls.list_keys())

    def rotate_key(self) -> KeyInfo:
        return self._run(calls.rotate_key())

    def retire_key(self, key_id: str) -> KeyInfo:
        return self._run(calls.retire_key(key_id))

    # audit
    def audit(self, *, principal: str = "", agent: str = "", kind: str = "", token_id: str = "",
              after_seq: int = 0, limit: int = 100) -> list[AuditRecord]:
        return self._run(calls.audit(principal, agent, kind, token_id, after_seq, limit))


class AsyncClient(_Base):
    """asyncio client; ``async with AsyncClient(...) as c: await c.verify(...)``."""

    def __init__(self, target: str, credential: str, *, tls: TLS | None = None,
                 timeout: float = 10.0) -> None:
        super().__init__(target, credential, tls=tls, timeout=timeout)
        self._channel = (grpc.aio.secure_channel(target, tls.credentials(), self._options())
                         if tls else grpc.aio.insecure_channel(target, self._options()))
        self._stubs = stubs_for(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _run(self, call: Call, timeout: float | None = None) -> Any:
        method = getattr(self._stubs[call.service], call.method)
        try:
            reply = await method(call.request, timeout=timeout or self.timeout,
                                 metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        return call.convert(reply)

    async def create_agent(self, agent_id: str, grants: Sequence[str], *,
                           max_ttl: int | None = None, max_depth: int | None = None,
                           owner: str = "", description: str = "",
                           public_key: bytes | None = None) -> tuple[AgentInfo, str]:
        return await self._run(calls.create_agent(agent_id, grants, max_ttl, max_depth, owner,
                                                  description, public_key))

    async def get_agent(self, agent_id: str) -> AgentInfo:
        return await self._run(calls.get_agent(agent_id))

    async def list_agents(self) -> list[AgentInfo]:
        return await self._run(calls.list_agents())

    async def update_agent(self, agent_id: str, *, grants: Sequence[str] | None = None,
                           max_ttl: int | None = None, max_depth: int | None = None,
                           description: str | None = None) -> AgentInfo:
        return await self._run(calls.update_agent(agent_id, grants, max_ttl, max_depth,
                                                  description))

    async def add_public_key(self, agent_id: str, public_key: bytes) -> AgentInfo:
        return await self._run(calls.add_public_key(agent_id, public_key))

    async def remove_public_key(self, agent_id: str, key_id: str) -> AgentInfo:
        return await self._run(calls.remove_public_key(agent_id, key_id))

    async def suspend_agent(self, agent_id: str) -> AgentInfo:
        return await self._run(calls.agent_action("SuspendAgent", agent_id))

    async def resume_agent(self, agent_id: str) -> AgentInfo:
        return await self._run(calls.agent_action("ResumeAgent", agent_id))

    async def revoke_all(self, agent_id: str) -> AgentInfo:
        return await self._run(calls.agent_action("RevokeAllTokens", agent_id))

    async def delete_agent(self, agent_id: str) -> None:
        """Delete an agent; every token it holds or passed on denies for good."""
        await self._run(calls.delete_agent(agent_id))

    async def create_principal(self, principal_id: str, role: str) -> Credential:
        return await self._run(calls.create_principal(principal_id, role))

    async def list_principals(self) -> list[PrincipalInfo]:
        return await self._run(calls.list_principals())

    async def disable_principal(self, principal_id: str) -> PrincipalInfo:
        return await self._run(calls.principal_action("DisablePrincipal", principal_id))

    async def enable_principal(self, principal_id: str) -> PrincipalInfo:
        return await self._run(calls.principal_action("EnablePrincipal", principal_id))

    async def rotate_credential(self, principal_id: str) -> Credential:
        """A new credential for the principal; the old one stops working at once."""
        return await self._run(calls.rotate_credential(principal_id))

    async def issue(self, grant: str, *, ttl: int | None = None,
                    caveats: Iterable[str] = ()) -> IssuedToken:
        return await self._run(calls.issue(grant, ttl, caveats))

    async def attenuate(self, token: str, caveats: Iterable[str]) -> IssuedToken:
        return await self._run(calls.attenuate(token, caveats))

    async def delegate(self, token: str, to: str, caveats: Iterable[str] = ()) -> IssuedToken:
        return await self._run(calls.delegate(token, to, caveats))

    async def inspect(self, token: str) -> InspectResult:
        return await self._run(calls.inspect(token))

    async def revoke(self, token_or_id: str, reason: str = "") -> RevokeResult:
        return await self._run(calls.revoke(token_or_id, reason))

    async def tree(self, node_id: str) -> TreeNode:
        return await self._run(calls.tree(node_id))

    async def list_keys(self) -> list[KeyInfo]:
        return await self._run(calls.list_keys())

    async def rotate_key(self) -> KeyInfo:
        return await self._run(calls.rotate_key())

    async def retire_key(self, key_id: str) -> KeyInfo:
        return await self._run(calls.retire_key(key_id))

    async def audit(self, *, principal: str = "", agent: str = "", kind: str = "",
                    token_id: str = "", after_seq: int = 0, limit: int = 100) -> list[AuditRecord]:
        return await self._run(calls.audit(principal, agent, kind, token_id, after_seq, limit))

    async def verify(self, token: str, action: str, resource: str, *, presenter: str = "",
                     ctx: Mapping[str, str] | None = None) -> VerifyResult:
        return await self._run(calls.verify(token, action, resource, presenter, ctx))

    async def verify_batch(self, items: Sequence[VerifyItem]) -> list[VerifyResult]:
        return await self._run(self._batch(items))
