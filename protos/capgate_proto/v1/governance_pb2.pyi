from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UsageRequest(_message.Message):
    __slots__ = ("agent", "since_seconds")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SINCE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    agent: str
    since_seconds: int
    def __init__(self, agent: _Optional[str] = ..., since_seconds: _Optional[int] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("agent", "kind", "action", "subject", "count", "first_seen", "last_seen")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    agent: str
    kind: str
    action: str
    subject: str
    count: int
    first_seen: str
    last_seen: str
    def __init__(self, agent: _Optional[str] = ..., kind: _Optional[str] = ..., action: _Optional[str] = ..., subject: _Optional[str] = ..., count: _Optional[int] = ..., first_seen: _Optional[str] = ..., last_seen: _Optional[str] = ...) -> None: ...

class UsageResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ...) -> None: ...

class ReviewRequest(_message.Message):
    __slots__ = ("agent", "since_seconds")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SINCE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    agent: str
    since_seconds: int
    def __init__(self, agent: _Optional[str] = ..., since_seconds: _Optional[int] = ...) -> None: ...

class GrantUse(_message.Message):
    __slots__ = ("grant", "uses", "last_used", "used", "proposed")
    GRANT_FIELD_NUMBER: _ClassVar[int]
    USES_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    PROPOSED_FIELD_NUMBER: _ClassVar[int]
    grant: str
    uses: int
    last_used: str
    used: _containers.RepeatedScalarFieldContainer[str]
    proposed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, grant: _Optional[str] = ..., uses: _Optional[int] = ..., last_used: _Optional[str] = ..., used: _Optional[_Iterable[str]] = ..., proposed: _Optional[_Iterable[str]] = ...) -> None: ...

class AgentReview(_message.Message):
    __slots__ = ("agent", "ceiling", "grants", "proposed", "uses", "denies", "last_used", "idle", "max_depth", "depth_used", "proposed_max_depth", "changes")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    CEILING_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    PROPOSED_FIELD_NUMBER: _ClassVar[int]
    USES_FIELD_NUMBER: _ClassVar[int]
    DENIES_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_FIELD_NUMBER: _ClassVar[int]
    IDLE_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    DEPTH_USED_FIELD_NUMBER: _ClassVar[int]
    PROPOSED_MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    agent: str
    ceiling: _containers.RepeatedScalarFieldContainer[str]
    grants: _containers.RepeatedCompositeFieldContainer[GrantUse]
    proposed: _containers.RepeatedScalarFieldContainer[str]
    uses: int
    denies: int
    last_used: str
    idle: bool
    max_depth: int
    depth_used: int
    proposed_max_depth: int
    changes: bool
    def __init__(self, agent: _Optional[str] = ..., ceiling: _Optional[_Iterable[str]] = ..., grants: _Optional[_Iterable[_Union[GrantUse, _Mapping]]] = ..., proposed: _Optional[_Iterable[str]] = ..., uses: _Optional[int] = ..., denies: _Optional[int] = ..., last_used: _Optional[str] = ..., idle: _Optional[bool] = ..., max_depth: _Optional[int] = ..., depth_used: _Optional[int] = ..., proposed_max_depth: _Optional[int] = ..., changes: _Optional[bool] = ...) -> None: ...

class ReviewResponse(_message.Message):
    __slots__ = ("reviews",)
    REVIEWS_FIELD_NUMBER: _ClassVar[int]
    reviews: _containers.RepeatedCompositeFieldContainer[AgentReview]
    def __init__(self, reviews: _Optional[_Iterable[_Union[AgentReview, _Mapping]]] = ...) -> None: ...

class ListAlertsRequest(_message.Message):
    __slots__ = ("agent", "after_seq", "limit")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    agent: str
    after_seq: int
    limit: int
    def __init__(self, agent: _Optional[str] = ..., after_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("seq", "agent", "at", "kind", "reason", "containment", "action", "resource", "detail_json")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CONTAINMENT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    agent: str
    at: str
    kind: str
    reason: str
    containment: str
    action: str
    resource: str
    detail_json: str
    def __init__(self, seq: _Optional[int] = ..., agent: _Optional[str] = ..., at: _Optional[str] = ..., kind: _Optional[str] = ..., reason: _Optional[str] = ..., containment: _Optional[str] = ..., action: _Optional[str] = ..., resource: _Optional[str] = ..., detail_json: _Optional[str] = ...) -> None: ...

class ListAlertsResponse(_message.Message):
    __slots__ = ("alerts",)
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    def __init__(self, alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ...) -> None: ...

class GovernancePolicy(_message.Message):
    __slots__ = ("agent", "containment", "sensitivity", "warmup_seconds", "shadow_ceiling")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    CONTAINMENT_FIELD_NUMBER: _ClassVar[int]
    SENSITIVITY_FIELD_NUMBER: _ClassVar[int]
    WARMUP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_CEILING_FIELD_NUMBER: _ClassVar[int]
    agent: str
    containment: str
    sensitivity: float
    warmup_seconds: float
    shadow_ceiling: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent: _Optional[str] = ..., containment: _Optional[str] = ..., sensitivity: _Optional[float] = ..., warmup_seconds: _Optional[float] = ..., shadow_ceiling: _Optional[_Iterable[str]] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: str
    def __init__(self, agent: _Optional[str] = ...) -> None: ...
