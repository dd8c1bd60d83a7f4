from capgate_proto.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateAgentRequest(_message.Message):
    __slots__ = ("id", "ceiling", "max_ttl_seconds", "max_depth", "owner", "description", "public_key", "require_proof", "approvals", "rate")
    ID_FIELD_NUMBER: _ClassVar[int]
    CEILING_FIELD_NUMBER: _ClassVar[int]
    MAX_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_PROOF_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    id: str
    ceiling: _containers.RepeatedCompositeFieldContainer[_common_pb2.Grant]
    max_ttl_seconds: int
    max_depth: int
    owner: str
    description: str
    public_key: bytes
    require_proof: bool
    approvals: _containers.RepeatedCompositeFieldContainer[_common_pb2.ApprovalRule]
    rate: str
    def __init__(self, id: _Optional[str] = ..., ceiling: _Optional[_Iterable[_Union[_common_pb2.Grant, _Mapping]]] = ..., max_ttl_seconds: _Optional[int] = ..., max_depth: _Optional[int] = ..., owner: _Optional[str] = ..., description: _Optional[str] = ..., public_key: _Optional[bytes] = ..., require_proof: _Optional[bool] = ..., approvals: _Optional[_Iterable[_Union[_common_pb2.ApprovalRule, _Mapping]]] = ..., rate: _Optional[str] = ...) -> None: ...

class CreateAgentResponse(_message.Message):
    __slots__ = ("agent", "credential")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    agent: _common_pb2.Agent
    credential: str
    def __init__(self, agent: _Optional[_Union[_common_pb2.Agent, _Mapping]] = ..., credential: _Optional[str] = ...) -> None: ...

class GetAgentRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class AgentRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[_common_pb2.Agent]
    def __init__(self, agents: _Optional[_Iterable[_Union[_common_pb2.Agent, _Mapping]]] = ...) -> None: ...

class UpdateAgentRequest(_message.Message):
    __slots__ = ("id", "ceiling", "set_ceiling", "max_ttl_seconds", "max_depth", "description", "set_description", "require_proof", "set_require_proof", "approvals", "set_approvals", "rate", "set_rate")
    ID_FIELD_NUMBER: _ClassVar[int]
    CEILING_FIELD_NUMBER: _ClassVar[int]
    SET_CEILING_FIELD_NUMBER: _ClassVar[int]
    MAX_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SET_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_PROOF_FIELD_NUMBER: _ClassVar[int]
    SET_REQUIRE_PROOF_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    SET_APPROVALS_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    SET_RATE_FIELD_NUMBER: _ClassVar[int]
    id: str
    ceiling: _containers.RepeatedCompositeFieldContainer[_common_pb2.Grant]
    set_ceiling: bool
    max_ttl_seconds: int
    max_depth: int
    description: str
    set_description: bool
    require_proof: bool
    set_require_proof: bool
    approvals: _containers.RepeatedCompositeFieldContainer[_common_pb2.ApprovalRule]
    set_approvals: bool
    rate: str
    set_rate: bool
    def __init__(self, id: _Optional[str] = ..., ceiling: _Optional[_Iterable[_Union[_common_pb2.Grant, _Mapping]]] = ..., set_ceiling: _Optional[bool] = ..., max_ttl_seconds: _Optional[int] = ..., max_depth: _Optional[int] = ..., description: _Optional[str] = ..., set_description: _Optional[bool] = ..., require_proof: _Optional[bool] = ..., set_require_proof: _Optional[bool] = ..., approvals: _Optional[_Iterable[_Union[_common_pb2.ApprovalRule, _Mapping]]] = ..., set_approvals: _Optional[bool] = ..., rate: _Optional[str] = ..., set_rate: _Optional[bool] = ...) -> None: ...

class AddPublicKeyRequest(_message.Message):
    __slots__ = ("id", "public_key")
    ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    id: str
    public_key: bytes
    def __init__(self, id: _Optional[str] = ..., public_key: _Optional[bytes] = ...) -> None: ...

class RemovePublicKeyRequest(_message.Message):
    __slots__ = ("id", "key_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    key_id: str
    def __init__(self, id: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class CreatePrincipalRequest(_message.Message):
    __slots__ = ("id", "role")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    id: str
    role: str
    def __init__(self, id: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class CreatePrincipalResponse(_message.Message):
    __slots__ = ("id", "role", "credential")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    id: str
    role: str
    credential: str
    def __init__(self, id: _Optional[str] = ..., role: _Optional[str] = ..., credential: _Optional[str] = ...) -> None: ...

class DeleteAgentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PrincipalRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class Principal(_message.Message):
    __slots__ = ("id", "role", "created_at", "disabled")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    id: str
    role: str
    created_at: str
    disabled: bool
    def __init__(self, id: _Optional[str] = ..., role: _Optional[str] = ..., created_at: _Optional[str] = ..., disabled: _Optional[bool] = ...) -> None: ...

class ListPrincipalsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPrincipalsResponse(_message.Message):
    __slots__ = ("principals",)
    PRINCIPALS_FIELD_NUMBER: _ClassVar[int]
    principals: _containers.RepeatedCompositeFieldContainer[Principal]
    def __init__(self, principals: _Optional[_Iterable[_Union[Principal, _Mapping]]] = ...) -> None: ...
