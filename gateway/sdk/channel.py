"""Connecting to a gateway: channels with mutual TLS, or plaintext for local development."""

from __future__ import annotations

import grpc

from gateway.pki import TlsFiles

# Signed trust lists (received) and revocation batches (sent) reach ~2 MiB.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
]


def aio_channel(target: str, tls: TlsFiles | None) -> grpc.aio.Channel:
    """An asyncio channel to ``target``, presenting ``tls.cert`` when ``tls`` is given."""
    if tls is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    cert, key, ca = tls.read()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    return grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)


def channel(target: str, tls: TlsFiles | None) -> grpc.Channel:
    """A blocking channel to ``target``, presenting ``tls.cert`` when ``tls`` is given."""
    if tls is None:
        return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    cert, key, ca = tls.read()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    return grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
