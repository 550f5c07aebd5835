"""Connecting to a gateway: channels with mutual TLS, or plaintext for local development.

Every channel carries the SDK's service config (:func:`gateway.sdk.targets.service_config`):
round robin over all the replicas the target names, health checks, retries of idempotent calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from gateway.pki import TlsFiles
from gateway.sdk.targets import Target, resolve_target, service_config

# Signed trust lists (received) and revocation batches (sent) reach ~2 MiB.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
]


def _options(target: Target, tls: bool) -> list[tuple[str, str | int]]:
    options: list[tuple[str, str | int]] = [
        *CHANNEL_OPTIONS,
        ("grpc.service_config", service_config()),
        ("grpc.enable_retries", 1),
    ]
    if tls and target.server_name is not None:
        options.append(("grpc.ssl_target_name_override", target.server_name))
        options.append(("grpc.default_authority", target.server_name))
    return options


def _credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    cert, key, ca = tls.read()
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def aio_channel(
    target: str | Sequence[str], tls: TlsFiles | None, *, server_name: str | None = None
) -> grpc.aio.Channel:
    """An asyncio channel to ``target`` (one address or several: :func:`resolve_target`),
    presenting ``tls.cert`` when ``tls`` is given."""
    resolved = resolve_target(target, tls=tls is not None, server_name=server_name)
    options = _options(resolved, tls is not None)
    if tls is None:
        return grpc.aio.insecure_channel(resolved.uri, options=options)
    return grpc.aio.secure_channel(resolved.uri, _credentials(tls), options=options)


def channel(
    target: str | Sequence[str], tls: TlsFiles | None, *, server_name: str | None = None
) -> grpc.Channel:
    """A blocking channel to ``target`` (as :func:`aio_channel`)."""
    resolved = resolve_target(target, tls=tls is not None, server_name=server_name)
    options = _options(resolved, tls is not None)
    if tls is None:
        return grpc.insecure_channel(resolved.uri, options=options)
    return grpc.secure_channel(resolved.uri, _credentials(tls), options=options)
