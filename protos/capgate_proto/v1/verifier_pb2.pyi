from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VerifyRequest(_message.Message):
    __slots__ = ("token", "action", "resource", "presenter", "ctx", "proof", "discharges")
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
    PROOF_FIELD_NUMBER: _ClassVar[int]
    DISCHARGES_FIELD_NUMBER: _ClassVar[int]
    token: str
    action: str
    resource: str
    presenter: str
    ctx: _containers.ScalarMap[str, str]
    proof: Proof
    discharges: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, token: _Optional[str] = ..., action: _Optional[str] = ..., resource: _Optional[str] = ..., presenter: _Optional[str] = ..., ctx: _Optional[_Mapping[str, str]] = ..., proof: _Optional[_Union[Proof, _Mapping]] = ..., discharges: _Optional[_Iterable[str]] = ...) -> None: ...

class Proof(_message.Message):
    __slots__ = ("text", "method", "target")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    text: str
    method: str
    target: str
    def __init__(self, text: _Optional[str] = ..., method: _Optional[str] = ..., target: _Optional[str] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("allowed", "code", "reason", "caveat", "token_id", "chain", "proven", "counted")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CAVEAT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    PROVEN_FIELD_NUMBER: _ClassVar[int]
    COUNTED_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    code: str
    reason: str
    caveat: str
    token_id: str
    chain: _containers.RepeatedScalarFieldContainer[str]
    proven: bool
    counted: bool
    def __init__(self, allowed: _Optional[bool] = ..., code: _Optional[str] = ..., reason: _Optional[str] = ..., caveat: _Optional[str] = ..., token_id: _Optional[str] = ..., chain: _Optional[_Iterable[str]] = ..., proven: _Optional[bool] = ..., counted: _Optional[bool] = ...) -> None: ...

class VerifyBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[VerifyRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[VerifyRequest, _Mapping]]] = ...) -> None: ...

class VerifyBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[VerifyResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[VerifyResponse, _Mapping]]] = ...) -> None: ...
