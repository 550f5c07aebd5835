"""The public Python client of the gateway, for checkpoints (verifiers) and partners.

``from gateway.sdk import GatewayClient`` (blocking) or ``AsyncGatewayClient``; see
:mod:`gateway.sdk.client` and examples/README.md. This package imports nothing from the server
side (``gateway.runtime``, ``gateway.grpc``, the store): tests/test_layering.py checks it.
"""

from gateway.sdk.client import (
    AsyncGatewayClient,
    GatewayClient,
    GatewayRpcError,
    RetryPolicy,
    new_request_id,
)
from gateway.sdk.results import (
    ConvertedCode,
    Decision,
    SignedTrustList,
    SubmissionReceipt,
    decision_from_proto,
    receipt_from_proto,
    trust_from_proto,
    trust_list_from_proto,
)
from gateway.sdk.status import CodeStatusAnswer, verify_code_status

__all__ = [
    "AsyncGatewayClient",
    "CodeStatusAnswer",
    "ConvertedCode",
    "Decision",
    "GatewayClient",
    "GatewayRpcError",
    "RetryPolicy",
    "SignedTrustList",
    "SubmissionReceipt",
    "decision_from_proto",
    "new_request_id",
    "receipt_from_proto",
    "trust_from_proto",
    "trust_list_from_proto",
    "verify_code_status",
]
