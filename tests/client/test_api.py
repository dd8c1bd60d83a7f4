"""The public surface is pinned, and every error has exactly one status code."""

from __future__ import annotations

import collections

import grpc
import pytest

import capgate
import capgate_client
from capgate_client import from_rpc_error
from capgate_server import status_for


def test_core_public_api_is_pinned():
    assert sorted(capgate.__all__) == sorted(
        [
            # approval caveats and their discharges
            "APPROVAL_LOCATION",
            "MAX_APPROVERS",
            "ApprovalCaveat",
            "ApprovalRule",
            "bind_signature",
            "mint_discharge",
            "parse_approval_caveat",
            "parse_condition",
            "request_digest",
            "token_digest",
            "DEFAULT_LIMITS",
            "DENY_HEADER",
            "MAX_DEPTH",
            "PROOF_HEADER",
            "PROOF_WINDOW",
            "TOKEN_HEADER",
            "TOKEN_SCHEME",
            "ActionCaveat",
            "Agent",
            "AgentCaveat",
            "AgentStatus",
            "AlreadyExistsError",
            "AuthenticationError",
            "Budget",
            "BudgetCaveat",
            "CapgateError",
            "Caveat",
            "CaveatSyntaxError",
            "Ceiling",
            "Chain",
            "Clock",
            "CtxCaveat",
            "Decision",
            "DelegateCaveat",
            "DenyCode",
            "DepthCaveat",
            "DidCaveat",
            "Directory",
            "ExpiresCaveat",
            "FailedPreconditionError",
            "Glob",
            "Grant",
            "Hop",
            "HopInfo",
            "InvalidArgumentError",
            "Limits",
            "MalformedTokenError",
            "NotBeforeCaveat",
            "NotFoundError",
            "PermissionDeniedError",
            "PossessionProof",
            "RawCaveat",
            "RawMacaroon",
            "Request",
            "ResourceCaveat",
            "ResourceExhaustedError",
            "RevocationSet",
            "Token",
            "TokenDescription",
            "TokenIdentifier",
            "UnavailableError",
            "Verifier",
            "__version__",
            "append_server_delegation",
            "check_id",
            "delegate_offline",
            "delegation_id",
            "delegation_message",
            "describe",
            "ed25519_verify",
            "format_duration",
            "format_timestamp",
            "hop_expiry",
            "http_action",
            "http_resource",
            "load_private_key",
            "load_public_key",
            "new_private_key_pem",
            "new_token_id",
            "parse_caveat",
            "parse_duration",
            "parse_timestamp",
            "presented_token",
            "proof_message",
            "prove_possession",
            "public_key_id",
            "resource_problem",
            "restriction_caveats",
            "server_proof",
            "system_clock",
            "token_header",
            "weak_public_key",
        ]
    )
    for name in capgate.__all__:
        assert hasattr(capgate, name), name


def test_server_public_api_is_pinned():
    import capgate_server
    import capgate_server.store

    assert sorted(capgate_server.__all__) == sorted(
        [
            "CLOCK_HEALTH",
            "ERROR_METADATA_KEY",
            "POLICY",
            "AuditLog",
            "CapgateServer",
            "KeyEncryptionKey",
            "Replica",
            "ResourceLimits",
            "Settings",
            "WORKERS_HEALTH",
            "WorkerPool",
            "load_kek",
            "new_kek_text",
            "recover_admin",
            "serve",
            "serve_workers",
            "status_for",
            "usable_cores",
        ]
    )
    assert sorted(capgate_server.store.__all__) == sorted(
        [
            "ApprovalRecord",
            "ApprovalStatus",
            "ApprovalStore",
            "ApprovalVote",
            "Redemption",
            "AUDIT_FIELD_LIMITS",
            "GENESIS",
            "MIGRATIONS",
            "AgentPatch",
            "AuditEvent",
            "AuditQuery",
            "Break",
            "BudgetLease",
            "Change",
            "ChangeKind",
            "Checkpoint",
            "DelegationRecord",
            "LedgerKey",
            # governance: usage, alerts, containment policies
            "AlertRecord",
            "Containment",
            "GovernancePolicy",
            "GovernanceStore",
            "UsageKind",
            "UsageRow",
            "PostgresStore",
            "Principal",
            "Role",
            "RootKeyRecord",
            "SessionTimeouts",
            "Signer",
            "SqliteStore",
            "Store",
            "TokenRecord",
            "canonical",
            "link",
            "open_store",
            "walk",
        ]
    )
    for module in (capgate_server, capgate_server.store):
        for name in module.__all__:
            assert hasattr(module, name), name


def test_client_public_api_is_pinned():
    assert sorted(capgate_client.__all__) == sorted(
        [
            "ApprovalInfo",
            "ApprovalVoteInfo",
            "AccessReview",
            "Alert",
            "GovernancePolicyInfo",
            "GrantReview",
            "UsageInfo",
            "TLS",
            "AgentInfo",
            "AsyncClient",
            "AuditCheckpoint",
            "AuditRecord",
            "Client",
            "Credential",
            "HopStatus",
            "InspectResult",
            "IssuedToken",
            "KeyInfo",
            "LedgerCheck",
            "PrincipalInfo",
            "RevokeResult",
            "Token",
            "TreeNode",
            "VerifyItem",
            "VerifyResult",
            "delegate_offline",
            "from_rpc_error",
            # presenting tokens, and guarding services
            "Access",
            "AsyncGrpcGuard",
            "AsyncGuard",
            "CapgateMiddleware",
            "GrpcGuard",
            "Guard",
            "Presentation",
            "Presenter",
            "Proof",
            "Rule",
            "current_presentation",
            "mtls_presenter",
            "presenting",
        ]
    )
    for name in capgate_client.__all__:
        assert hasattr(capgate_client, name), name


def test_the_mcp_guard_is_its_own_public_face_and_the_sdk_needs_no_mcp():
    import subprocess
    import sys

    import capgate_client.mcp

    assert sorted(capgate_client.mcp.__all__) == ["Rule", "ToolGuard"]
    # importing the SDK (and every guard but the MCP one) loads no optional package
    code = (
        "import sys, capgate_client; "
        "print(sorted(m for m in ('mcp', 'starlette', 'uvicorn', 'httpx', 'envoy') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


Metadatum = collections.namedtuple("Metadatum", ["key", "value"])  # what grpc hands back
ALL_ERRORS = [
    c
    for n in capgate.__all__
    if isinstance(c := getattr(capgate, n), type) and issubclass(c, Exception)
]


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_every_error_maps_to_a_status_and_back(cls):
    code = status_for(cls("boom"))
    if cls is capgate.CapgateError:
        assert code is grpc.StatusCode.INTERNAL
        return
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.OK)

    class FakeRpcError(grpc.RpcError):
        def code(self):
            return code

        def details(self):
            return "boom"

        def trailing_metadata(self):
            return (Metadatum("capgate-error", cls.__name__),)

    back = from_rpc_error(FakeRpcError())
    assert type(back) is cls and str(back) == "boom"


def test_the_error_tree_is_one_tree():
    for cls in ALL_ERRORS:
        assert issubclass(cls, capgate.CapgateError)
    assert issubclass(capgate.MalformedTokenError, capgate.InvalidArgumentError)
    assert issubclass(capgate.CaveatSyntaxError, capgate.InvalidArgumentError)


def test_every_deny_code_is_documented_in_the_api():
    """Services written elsewhere read the codes from verifier.proto, not from Python."""
    from pathlib import Path

    proto = (
        Path(__file__).resolve().parents[2] / "protos" / "capgate_proto" / "v1" / "verifier.proto"
    ).read_text()
    missing = [
        c.value
        for c in capgate.DenyCode
        if c is not capgate.DenyCode.ALLOWED and f"//   {c.value} " not in proto
    ]
    assert not missing, missing


def test_grpc_s_own_resource_exhausted_is_a_resource_exhausted_error():
    class FromGrpc(grpc.RpcError):  # e.g. "Received message larger than max", no trailer
        def code(self):
            return grpc.StatusCode.RESOURCE_EXHAUSTED

        def details(self):
            return "Concurrent RPC limit exceeded!"

        def trailing_metadata(self):
            return ()

    error = from_rpc_error(FromGrpc())
    assert type(error) is capgate.ResourceExhaustedError
    assert status_for(capgate.ResourceExhaustedError("x")) is grpc.StatusCode.RESOURCE_EXHAUSTED
