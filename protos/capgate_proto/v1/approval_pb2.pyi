from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RequestApprovalRequest(_message.Message):
    __slots__ = ("token", "action", "resource", "presenter", "ctx", "note")
    class CtxEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    PRESENTER_FIELD_NUMBER: _ClassVar[int]
    CTX_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    token: str
    action: str
    resource: str
    presenter: str
    ctx: _containers.ScalarMap[str, str]
    note: str
    def __init__(self, token: _Optional[str] = ..., action: _Optional[str] = ..., resource: _Optional[str] = ..., presenter: _Optional[str] = ..., ctx: _Optional[_Mapping[str, str]] = ..., note: _Optional[str] = ...) -> None: ...

class GetApprovalRequest(_message.Message):
    __slots__ = ("id", "token")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    token: str
    def __init__(self, id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class ListApprovalsRequest(_message.Message):
    __slots__ = ("status", "limit")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    status: str
    limit: int
    def __init__(self, status: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListApprovalsResponse(_message.Message):
    __slots__ = ("approvals",)
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    approvals: _containers.RepeatedCompositeFieldContainer[Approval]
    def __init__(self, approvals: _Optional[_Iterable[_Union[Approval, _Mapping]]] = ...) -> None: ...

class WatchApprovalsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DecideApprovalRequest(_message.Message):
    __slots__ = ("id", "approve", "reason", "ttl_seconds", "uses")
    ID_FIELD_NUMBER: _ClassVar[int]
    APPROVE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    USES_FIELD_NUMBER: _ClassVar[int]
    id: str
    approve: bool
    reason: str
    ttl_seconds: int
    uses: int
    def __init__(self, id: _Optional[str] = ..., approve: _Optional[bool] = ..., reason: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., uses: _Optional[int] = ...) -> None: ...

class Vote(_message.Message):
    __slots__ = ("approver", "approve", "reason", "at")
    APPROVER_FIELD_NUMBER: _ClassVar[int]
    APPROVE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    approver: str
    approve: bool
    reason: str
    at: str
    def __init__(self, approver: _Optional[str] = ..., approve: _Optional[bool] = ..., reason: _Optional[str] = ..., at: _Optional[str] = ...) -> None: ...

class Approval(_message.Message):
    __slots__ = ("id", "status", "token_id", "chain", "requested_by", "presenter", "action", "resource", "ctx", "request_digest", "conditions", "approvals_needed", "votes", "note", "created_at", "wait_until", "expires", "uses", "used", "reason", "discharges")
    class CtxEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    PRESENTER_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    CTX_FIELD_NUMBER: _ClassVar[int]
    REQUEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_NEEDED_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    WAIT_UNTIL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    USES_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DISCHARGES_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: str
    token_id: str
    chain: _containers.RepeatedScalarFieldContainer[str]
    requested_by: str
    presenter: str
    action: str
    resource: str
    ctx: _containers.ScalarMap[str, str]
    request_digest: str
    conditions: _containers.RepeatedScalarFieldContainer[str]
    approvals_needed: int
    votes: _containers.RepeatedCompositeFieldContainer[Vote]
    note: str
    created_at: str
    wait_until: str
    expires: str
    uses: int
    used: int
    reason: str
    discharges: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., status: _Optional[str] = ..., token_id: _Optional[str] = ..., chain: _Optional[_Iterable[str]] = ..., requested_by: _Optional[str] = ..., presenter: _Optional[str] = ..., action: _Optional[str] = ..., resource: _Optional[str] = ..., ctx: _Optional[_Mapping[str, str]] = ..., request_digest: _Optional[str] = ..., conditions: _Optional[_Iterable[str]] = ..., approvals_needed: _Optional[int] = ..., votes: _Optional[_Iterable[_Union[Vote, _Mapping]]] = ..., note: _Optional[str] = ..., created_at: _Optional[str] = ..., wait_until: _Optional[str] = ..., expires: _Optional[str] = ..., uses: _Optional[int] = ..., used: _Optional[int] = ..., reason: _Optional[str] = ..., discharges: _Optional[_Iterable[str]] = ...) -> None: ...
