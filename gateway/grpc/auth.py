"""Who is calling: the caller's role from its mTLS certificate (``gateway.pki`` reads the
certificate names; docs/api.md, "Authentication").
"""

from __future__ import annotations

from typing import Any

import grpc

from gateway.pki import Peer, Role, peer_from_auth_context
from keys.errors import UnauthenticatedError

_SAN = "x509_subject_alternative_name"
# The caller's identity by the subject alternative names of its verified certificate: every call
# of a connection carries the same names, so they are parsed once, not per call. Bounded (a
# province has a few hundred verifier certificates); cleared whole when full.
_PEERS: dict[tuple[bytes, ...], Peer] = {}
_MAX_PEERS = 4096


def peer_names(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[bytes, ...] | None:
    """The subject alternative names of the caller's verified certificate (``()`` when it has
    none), or ``None`` when the call is not authenticated (plaintext).

    Read as gRPC's peer identity, not through ``auth_context()``, which copies every property
    of the connection (the whole certificate among them) on each call: with a certificate that
    names any, the identity grpc reports is exactly its subject alternative names."""
    key = context.peer_identity_key()
    if key is None:
        return None
    if key != _SAN:  # a certificate without a subject alternative name
        return ()
    return tuple(context.peer_identities() or ())


def peer_of(names: tuple[bytes, ...]) -> Peer:
    """The caller named by these subject alternative names (parsed once per set of names);
    raises as :func:`gateway.pki.peer_from_auth_context`."""
    peer = _PEERS.get(names)
    if peer is None:
        peer = peer_from_auth_context({_SAN: list(names)})  # raises for no usable name
        if len(_PEERS) >= _MAX_PEERS:
            _PEERS.clear()
        _PEERS[names] = peer
    return peer


def caller(context: grpc.aio.ServicerContext[Any, Any], tls: bool) -> Peer | None:
    """The authenticated caller; ``None`` on a plaintext (development) server."""
    if not tls:
        return None
    names = peer_names(context)
    if names is None:
        raise UnauthenticatedError()
    return peer_of(names)


def require(context: grpc.aio.ServicerContext[Any, Any], tls: bool, *roles: Role) -> Peer | None:
    """The caller, who must hold one of ``roles`` (any caller on a plaintext server)."""
    peer = caller(context, tls)
    if peer is not None:
        peer.require(*roles)
    return peer
