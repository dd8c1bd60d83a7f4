"""The public surface is pinned, and every error has exactly one status code."""

from __future__ import annotations

import grpc
import pytest

import capgate
import capgate._errors as errors
import capgate_client
from capgate_client._errors import from_rpc_error
from capgate_server._status import status_for


def test_core_public_api_is_pinned():
    assert sorted(capgate.__all__) == sorted([
        "DEFAULT_LIMITS", "Agent", "AgentStatus", "AlreadyExistsError", "AuthenticationError",
        "CapgateError", "Caveat", "CaveatSyntaxError", "Ceiling", "Chain", "Clock", "Decision",
        "DelegateCaveat", "DenyCode", "DepthCaveat", "Directory", "FailedPreconditionError",
        "Glob", "Grant", "Hop", "InvalidArgumentError", "Limits", "MalformedTokenError",
        "NotFoundError", "PermissionDeniedError", "Request", "RevocationSet", "Token",
        "TokenIdentifier", "UnavailableError", "Verifier", "__version__",
        "append_server_delegation", "check_id", "delegate_offline", "format_duration",
        "format_timestamp", "load_public_key", "new_token_id", "parse_caveat",
        "parse_duration", "parse_timestamp", "public_key_id", "resource_problem",
        "restriction_caveats", "system_clock"])
    for name in capgate.__all__:
        assert hasattr(capgate, name), name


def test_client_public_api_is_pinned():
    assert sorted(capgate_client.__all__) == sorted([
        "TLS", "AgentInfo", "AsyncClient", "AuditRecord", "Client", "Credential", "HopStatus",
        "InspectResult", "IssuedToken", "KeyInfo", "RevokeResult", "Token", "TreeNode",
        "VerifyItem", "VerifyResult", "delegate_offline", "from_rpc_error"])


ALL_ERRORS = [getattr(errors, n) for n in errors.__all__]


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_every_error_maps_to_a_status_and_back(cls):
    code = status_for(cls("boom"))
    if cls is errors.CapgateError:
        assert code is grpc.StatusCode.INTERNAL
        return
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.OK)

    class FakeRpcError(grpc.RpcError):
        def code(self):
            return code

        def details(self):
            return "boom"

        def trailing_metadata(self):
            return (("capgate-error", cls.__name__),)

    back = from_rpc_error(FakeRpcError())
    assert type(back) is cls and str(back) == "boom"


def test_the_error_tree_is_one_tree():
    for cls in ALL_ERRORS:
        assert issubclass(cls, errors.CapgateError)
    assert issubclass(errors.MalformedTokenError, errors.InvalidArgumentError)
    assert issubclass(errors.CaveatSyntaxError, errors.InvalidArgumentError)
