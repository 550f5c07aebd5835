"""Where the SDK connects: one address, one DNS name with several addresses, or a list of replicas.

Every channel the SDK opens carries the same gRPC service config (:func:`service_config`):

* ``round_robin`` load balancing over every address the target resolves to (the addresses of a
  list, or every A/AAAA record of a DNS name, re-resolved when connections fail);
* client-side health checking (``grpc.health.v1.Health``, service ``""``): a replica that
  reports ``NOT_SERVING`` (shutting down, database unreachable, keys expired) gets no calls
  until it reports ``SERVING`` again;
* a ``retryPolicy`` on the idempotent methods only (:data:`IDEMPOTENT_METHODS`), for
  ``UNAVAILABLE``: gRPC retries such a call at once on the next replica. The SDK's own
  :class:`~gateway.sdk.client.RetryPolicy` then waits out an outage of every replica within
  the call's deadline.

Over TLS the certificate of every replica is checked against one name: the DNS name of a single
target, or ``server_name`` (required for a list of addresses, which has no name of its own).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass

# The methods that are safe to send twice (docs/api.md "Several gateways"): each one either
# reads (the keys, the trust list), or writes something that the store records once per input
# (a code's conversion, a submission's digest), so a second attempt returns what the first did.
IDEMPOTENT_METHODS: tuple[tuple[str, str], ...] = (
    ("gateway.api.v1.RecognitionService", "Recognise"),
    ("gateway.api.v1.RecognitionService", "GetGatewayKeys"),
    ("gateway.api.v1.PartnerService", "PublishKeySet"),
    ("gateway.api.v1.PartnerService", "RevokeKey"),
    ("gateway.api.v1.PartnerService", "PublishRevocations"),
    ("gateway.api.v1.PartnerService", "GetCodeStatus"),  # a read
    ("gateway.api.v1.TrustListService", "GetTrustList"),
    # The same declaration again returns its first home code (api.md, "DeclarationService").
    ("gateway.api.v1.DeclarationService", "Declare"),
    ("gateway.api.v1.DeclarationService", "GetDeclaration"),
)

# gRPC's own retry, for an immediate second try on another replica (its attempts are part of
# one SDK attempt; gRPC caps maxAttempts at 5).
_GRPC_RETRY = {
    "maxAttempts": 3,
    "initialBackoff": "0.02s",
    "maxBackoff": "0.2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def service_config() -> str:
    """The service config (JSON) of every SDK channel: round robin, health checks, retries."""
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": ""},
            "methodConfig": [
                {
                    "name": [{"service": s, "method": m} for s, m in IDEMPOTENT_METHODS],
                    "retryPolicy": _GRPC_RETRY,
                }
            ],
        },
        sort_keys=True,
    )


@dataclass(frozen=True)
class Target:
    """A gRPC target string and the name certificates are checked against (``None``: the
    target's own host name, as gRPC derives it)."""

    uri: str
    server_name: str | None
    addresses: int  # how many the caller gave (a DNS name counts as one)


def _ip_address(address: str) -> tuple[int, str]:
    """``(IP version, address as the ipv4:/ipv6: schemes want it)`` of ``host:port``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"gateway address {address!r}: expected HOST:PORT")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise ValueError(
            f"gateway address {address!r}: a list of gateways must give IP addresses; "
            "for host names, give one DNS name whose records list every replica"
        ) from None
    if ip.version == 6:
        return 6, f"[{ip}]:{port}"
    return 4, f"{ip}:{port}"


def resolve_target(
    addresses: str | Sequence[str], *, tls: bool, server_name: str | None = None
) -> Target:
    """The gRPC target for ``addresses``: one ``HOST:PORT`` (a DNS name may have several
    records: all are used), or a list of ``IP:PORT`` of the replicas.

    Raises ``ValueError`` for an empty list, a list naming a host name or mixing IPv4 with IPv6,
    and, over TLS, for a list without ``server_name`` (the name in the replicas' certificates).
    """
    if server_name is not None and not server_name.strip():
        raise ValueError("server_name must not be empty")
    listed = [addresses] if isinstance(addresses, str) else list(addresses)
    if not listed or any(not isinstance(a, str) or not a.strip() for a in listed):
        raise ValueError("give at least one gateway address (HOST:PORT)")
    if len(set(listed)) != len(listed):
        raise ValueError("a gateway address is listed twice")
    if len(listed) == 1:
        return Target(listed[0], server_name, 1)
    if tls and server_name is None:
        raise ValueError(
            "over TLS with several gateway addresses, give server_name= "
            "(the host name in the gateways' certificates)"
        )
    parsed = [_ip_address(a) for a in listed]
    versions = {version for version, _ in parsed}
    if len(versions) != 1:
        raise ValueError("a list of gateways must be all IPv4 or all IPv6 addresses")
    scheme = "ipv6" if versions == {6} else "ipv4"
    return Target(f"{scheme}:" + ",".join(a for _, a in parsed), server_name, len(listed))
