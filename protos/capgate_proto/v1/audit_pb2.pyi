from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_ANY: _ClassVar[Outcome]
    OUTCOME_OK: _ClassVar[Outcome]
    OUTCOME_REFUSED: _ClassVar[Outcome]
OUTCOME_ANY: Outcome
OUTCOME_OK: Outcome
OUTCOME_REFUSED: Outcome

class ListEventsRequest(_message.Message):
    __slots__ = ("principal", "agent", "kind", "token_id", "after_seq", "limit", "newest_first", "code", "outcome")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NEWEST_FIRST_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    principal: str
    agent: str
    kind: str
    token_id: str
    after_seq: int
    limit: int
    newest_first: bool
    code: str
    outcome: Outcome
    def __init__(self, principal: _Optional[str] = ..., agent: _Optional[str] = ..., kind: _Optional[str] = ..., token_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., limit: _Optional[int] = ..., newest_first: _Optional[bool] = ..., code: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("seq", "at", "principal", "kind", "subject", "ok", "code", "reason", "chain", "detail", "action", "resource", "presenter", "count", "last_at", "caveat", "ctx_keys", "replica", "pos", "digest")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    PRESENTER_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_AT_FIELD_NUMBER: _ClassVar[int]
    CAVEAT_FIELD_NUMBER: _ClassVar[int]
    CTX_KEYS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    POS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at: str
    principal: str
    kind: str
    subject: str
    ok: bool
    code: str
    reason: str
    chain: _containers.RepeatedScalarFieldContainer[str]
    detail: str
    action: str
    resource: str
    presenter: str
    count: int
    last_at: str
    caveat: str
    ctx_keys: _containers.RepeatedScalarFieldContainer[str]
    replica: str
    pos: int
    digest: str
    def __init__(self, seq: _Optional[int] = ..., at: _Optional[str] = ..., principal: _Optional[str] = ..., kind: _Optional[str] = ..., subject: _Optional[str] = ..., ok: _Optional[bool] = ..., code: _Optional[str] = ..., reason: _Optional[str] = ..., chain: _Optional[_Iterable[str]] = ..., detail: _Optional[str] = ..., action: _Optional[str] = ..., resource: _Optional[str] = ..., presenter: _Optional[str] = ..., count: _Optional[int] = ..., last_at: _Optional[str] = ..., caveat: _Optional[str] = ..., ctx_keys: _Optional[_Iterable[str]] = ..., replica: _Optional[str] = ..., pos: _Optional[int] = ..., digest: _Optional[str] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("after_pos", "follow", "principal", "agent", "kind", "code", "outcome", "since")
    AFTER_POS_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    after_pos: int
    follow: bool
    principal: str
    agent: str
    kind: str
    code: str
    outcome: Outcome
    since: float
    def __init__(self, after_pos: _Optional[int] = ..., follow: _Optional[bool] = ..., principal: _Optional[str] = ..., agent: _Optional[str] = ..., kind: _Optional[str] = ..., code: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., since: _Optional[float] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("pos", "digest", "at", "key_id", "public_key", "signature")
    POS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    pos: int
    digest: str
    at: float
    key_id: str
    public_key: str
    signature: str
    def __init__(self, pos: _Optional[int] = ..., digest: _Optional[str] = ..., at: _Optional[float] = ..., key_id: _Optional[str] = ..., public_key: _Optional[str] = ..., signature: _Optional[str] = ...) -> None: ...

class GetCheckpointRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VerifyLedgerRequest(_message.Message):
    __slots__ = ("since", "against")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    AGAINST_FIELD_NUMBER: _ClassVar[int]
    since: int
    against: Checkpoint
    def __init__(self, since: _Optional[int] = ..., against: _Optional[_Union[Checkpoint, _Mapping]] = ...) -> None: ...

class VerifyLedgerResponse(_message.Message):
    __slots__ = ("intact", "break_pos", "reason", "start", "head", "records", "checkpoints", "key_id")
    INTACT_FIELD_NUMBER: _ClassVar[int]
    BREAK_POS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    intact: bool
    break_pos: int
    reason: str
    start: int
    head: int
    records: int
    checkpoints: int
    key_id: str
    def __init__(self, intact: _Optional[bool] = ..., break_pos: _Optional[int] = ..., reason: _Optional[str] = ..., start: _Optional[int] = ..., head: _Optional[int] = ..., records: _Optional[int] = ..., checkpoints: _Optional[int] = ..., key_id: _Optional[str] = ...) -> None: ...
