"""Who is calling: the caller's role from its mTLS certificate (``gateway.pki`` reads the
certificate names; docs/api.md, "Authentication").
"""

from __future__ import annotations

from typing import Any

import grpc

from gateway.pki import Peer, Role, peer_from_auth_context
from keys.errors import UnauthenticatedError


def caller(context: grpc.aio.ServicerContext[Any, Any], tls: bool) -> Peer | None:
    """The authenticated caller; ``None`` on a plaintext (development) server."""
    if not tls:
        return None
    auth = context.auth_context()
    if not auth:
        raise UnauthenticatedError()
    return peer_from_auth_context({key: list(values) for key, values in auth.items()})


def require(context: grpc.aio.ServicerContext[Any, Any], tls: bool, *roles: Role) -> Peer | None:
    """The caller, who must hold one of ``roles`` (any caller on a plaintext server)."""
    peer = caller(context, tls)
    if peer is not None:
        peer.require(*roles)
    return peer
