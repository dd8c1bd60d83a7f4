from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Grant(_message.Message):
    __slots__ = ("actions", "resource")
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedScalarFieldContainer[str]
    resource: str
    def __init__(self, actions: _Optional[_Iterable[str]] = ..., resource: _Optional[str] = ...) -> None: ...

class Agent(_message.Message):
    __slots__ = ("id", "owner", "description", "status", "ceiling", "max_ttl_seconds", "max_depth", "epoch", "revoked_before", "public_keys", "created_at", "require_proof", "approvals", "rate")
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CEILING_FIELD_NUMBER: _ClassVar[int]
    MAX_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEYS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_PROOF_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner: str
    description: str
    status: str
    ceiling: _containers.RepeatedCompositeFieldContainer[Grant]
    max_ttl_seconds: int
    max_depth: int
    epoch: int
    revoked_before: str
    public_keys: _containers.RepeatedCompositeFieldContainer[PublicKey]
    created_at: str
    require_proof: bool
    approvals: _containers.RepeatedCompositeFieldContainer[ApprovalRule]
    rate: str
    def __init__(self, id: _Optional[str] = ..., owner: _Optional[str] = ..., description: _Optional[str] = ..., status: _Optional[str] = ..., ceiling: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., max_ttl_seconds: _Optional[int] = ..., max_depth: _Optional[int] = ..., epoch: _Optional[int] = ..., revoked_before: _Optional[str] = ..., public_keys: _Optional[_Iterable[_Union[PublicKey, _Mapping]]] = ..., created_at: _Optional[str] = ..., require_proof: _Optional[bool] = ..., approvals: _Optional[_Iterable[_Union[ApprovalRule, _Mapping]]] = ..., rate: _Optional[str] = ...) -> None: ...

class ApprovalRule(_message.Message):
    __slots__ = ("condition", "approvers")
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    APPROVERS_FIELD_NUMBER: _ClassVar[int]
    condition: str
    approvers: int
    def __init__(self, condition: _Optional[str] = ..., approvers: _Optional[int] = ...) -> None: ...

class PublicKey(_message.Message):
    __slots__ = ("key_id", "public_key", "created_at")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    public_key: bytes
    created_at: str
    def __init__(self, key_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., created_at: _Optional[str] = ...) -> None: ...
