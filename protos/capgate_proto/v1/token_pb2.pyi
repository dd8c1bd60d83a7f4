from capgate_proto.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IssueTokenRequest(_message.Message):
    __slots__ = ("grant", "ttl_seconds", "caveats")
    GRANT_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CAVEATS_FIELD_NUMBER: _ClassVar[int]
    grant: _common_pb2.Grant
    ttl_seconds: int
    caveats: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, grant: _Optional[_Union[_common_pb2.Grant, _Mapping]] = ..., ttl_seconds: _Optional[int] = ..., caveats: _Optional[_Iterable[str]] = ...) -> None: ...

class TokenResponse(_message.Message):
    __slots__ = ("token", "token_id", "expires", "delegation_id")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    DELEGATION_ID_FIELD_NUMBER: _ClassVar[int]
    token: str
    token_id: str
    expires: str
    delegation_id: str
    def __init__(self, token: _Optional[str] = ..., token_id: _Optional[str] = ..., expires: _Optional[str] = ..., delegation_id: _Optional[str] = ...) -> None: ...

class AttenuateTokenRequest(_message.Message):
    __slots__ = ("token", "caveats", "approvals")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CAVEATS_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    token: str
    caveats: _containers.RepeatedScalarFieldContainer[str]
    approvals: _containers.RepeatedCompositeFieldContainer[_common_pb2.ApprovalRule]
    def __init__(self, token: _Optional[str] = ..., caveats: _Optional[_Iterable[str]] = ..., approvals: _Optional[_Iterable[_Union[_common_pb2.ApprovalRule, _Mapping]]] = ...) -> None: ...

class DelegateTokenRequest(_message.Message):
    __slots__ = ("token", "to", "caveats", "approvals")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    CAVEATS_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    token: str
    to: str
    caveats: _containers.RepeatedScalarFieldContainer[str]
    approvals: _containers.RepeatedCompositeFieldContainer[_common_pb2.ApprovalRule]
    def __init__(self, token: _Optional[str] = ..., to: _Optional[str] = ..., caveats: _Optional[_Iterable[str]] = ..., approvals: _Optional[_Iterable[_Union[_common_pb2.ApprovalRule, _Mapping]]] = ...) -> None: ...

class InspectTokenRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class Hop(_message.Message):
    __slots__ = ("agent", "delegation_id", "at", "offline", "restrictions", "revoked", "agent_status")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    DELEGATION_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_FIELD_NUMBER: _ClassVar[int]
    RESTRICTIONS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    AGENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    agent: str
    delegation_id: str
    at: str
    offline: bool
    restrictions: _containers.RepeatedScalarFieldContainer[str]
    revoked: bool
    agent_status: str
    def __init__(self, agent: _Optional[str] = ..., delegation_id: _Optional[str] = ..., at: _Optional[str] = ..., offline: _Optional[bool] = ..., restrictions: _Optional[_Iterable[str]] = ..., revoked: _Optional[bool] = ..., agent_status: _Optional[str] = ...) -> None: ...

class InspectTokenResponse(_message.Message):
    __slots__ = ("token_id", "key_id", "issued_at", "expires", "caveats", "lineage", "chain", "signature_valid", "revoked", "status")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    CAVEATS_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_VALID_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    key_id: str
    issued_at: str
    expires: str
    caveats: _containers.RepeatedScalarFieldContainer[str]
    lineage: _containers.RepeatedScalarFieldContainer[str]
    chain: _containers.RepeatedCompositeFieldContainer[Hop]
    signature_valid: bool
    revoked: bool
    status: str
    def __init__(self, token_id: _Optional[str] = ..., key_id: _Optional[str] = ..., issued_at: _Optional[str] = ..., expires: _Optional[str] = ..., caveats: _Optional[_Iterable[str]] = ..., lineage: _Optional[_Iterable[str]] = ..., chain: _Optional[_Iterable[_Union[Hop, _Mapping]]] = ..., signature_valid: _Optional[bool] = ..., revoked: _Optional[bool] = ..., status: _Optional[str] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("token", "id", "reason")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    token: str
    id: str
    reason: str
    def __init__(self, token: _Optional[str] = ..., id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ("id", "newly_revoked", "expires")
    ID_FIELD_NUMBER: _ClassVar[int]
    NEWLY_REVOKED_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    id: str
    newly_revoked: bool
    expires: str
    def __init__(self, id: _Optional[str] = ..., newly_revoked: _Optional[bool] = ..., expires: _Optional[str] = ...) -> None: ...

class GetTokenTreeRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class TokenTree(_message.Message):
    __slots__ = ("id", "agent", "issued_by", "at", "revoked", "restrictions", "children", "truncated")
    ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ISSUED_BY_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    RESTRICTIONS_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    id: str
    agent: str
    issued_by: str
    at: str
    revoked: bool
    restrictions: _containers.RepeatedScalarFieldContainer[str]
    children: _containers.RepeatedCompositeFieldContainer[TokenTree]
    truncated: bool
    def __init__(self, id: _Optional[str] = ..., agent: _Optional[str] = ..., issued_by: _Optional[str] = ..., at: _Optional[str] = ..., revoked: _Optional[bool] = ..., restrictions: _Optional[_Iterable[str]] = ..., children: _Optional[_Iterable[_Union[TokenTree, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...
