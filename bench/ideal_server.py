"""The ideal server: the least work a recognition gateway could do, behind the same gRPC API.

A bare ``grpc.aio`` server implementing ``gateway.api.v1.RecognitionService`` (the same proto and
the same server options as ``gateway/grpc/server.py``) that, per request, only parses a code of
its own simple compact format, verifies one Ed25519 signature (pynacl), and for a green code
signs a reply (Ed25519, pynacl). No registry, no region detection, no database. ``bench/run.py``
measures the gateway against it: the ratio says how much of the unavoidable cost the gateway
adds on top.

Code format (``IDL1``)::

    IDL1:<base64url(payload JSON)>.<base64url(64-byte Ed25519 signature over the payload bytes)>

    python bench/ideal_server.py --listen 127.0.0.1:0 --verify-key HEX --signing-seed HEX

prints ``ideal serving on HOST:PORT`` when ready and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import os
import random
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent import futures
from pathlib import Path

import grpc
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

if __package__ in (None, ""):  # run as a script: make the repo's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc

PREFIX = "IDL1:"
ATTEST_KID = "ideal-attest"
# The same options as gateway/grpc/server.py build_server (keep them in step).
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024),
    ("grpc.max_send_message_length", 64 * 1024),
    ("grpc.so_reuseport", 0),
]
_COLOURS = {"green": pb.COLOUR_GREEN, "yellow": pb.COLOUR_YELLOW, "red": pb.COLOUR_RED}


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def issue_code(
    key: SigningKey,
    *,
    holder_id: str,
    holder_name: str,
    colour: str,
    issued_at: int,
    expires_at: int,
    code_id: str,
    length: int,
) -> str:
    """An IDL1 code, padded (``pad`` field) to exactly ``length`` characters when it can be."""
    claims: dict[str, object] = {
        "v": 1,
        "region": "999999",
        "id": holder_id,
        "name": holder_name,
        "colour": colour,
        "iat": issued_at,
        "exp": expires_at,
        "cid": code_id,
        "pad": "",
    }

    def seal() -> str:
        payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode()
        return f"{PREFIX}{_b64e(payload)}.{_b64e(key.sign(payload).signature)}"

    code = seal()
    if len(code) < length:
        # base64 grows 4 chars per 3 bytes: pad the payload, then trim to the nearest length.
        claims["pad"] = "x" * ((length - len(code)) * 3 // 4)
        code = seal()
        while len(code) > length and claims["pad"]:
            claims["pad"] = str(claims["pad"])[:-1]
            code = seal()
    return code


def make_codes(
    key: SigningKey, count: int, length: int, now: int, *, seed: int = 7, non_green: float = 0.1
) -> list[tuple[str, str]]:
    """``count`` distinct IDL1 codes with ``non_green`` of them yellow or red: (code, expected)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        colour = "green" if rng.random() >= non_green else rng.choice(("yellow", "red"))
        code = issue_code(
            key,
            holder_id=f"{rng.randrange(10**17, 10**18)}",
            holder_name=f"holder-{i}",
            colour=colour,
            issued_at=now - 7200,
            expires_at=now + 79200,
            code_id=f"{rng.getrandbits(64):016x}",
            length=length,
        )
        out.append((code, "RECOGNISED" if colour == "green" else "NOT_GREEN"))
    return out


class IdealService(pb_grpc.RecognitionServiceServicer):
    """Parse, verify one Ed25519 signature, sign a reply: nothing else."""

    def __init__(self, verify_key: VerifyKey, signing_key: SigningKey) -> None:
        self._verify = verify_key
        self._sign = signing_key

    def _decide(self, request: pb.RecogniseRequest) -> pb.RecogniseResponse:
        code = request.code
        try:
            if not code.startswith(PREFIX):
                raise ValueError("unknown prefix")
            body, _, sig = code[len(PREFIX) :].partition(".")
            payload = _b64d(body)
            self._verify.verify(payload, _b64d(sig))
            claims = json.loads(payload)
        except BadSignatureError:
            return pb.RecogniseResponse(
                request_id=request.request_id, reason="SIGNATURE_INVALID", message="bad signature"
            )
        except (ValueError, binascii.Error):
            return pb.RecogniseResponse(
                request_id=request.request_id, reason="MALFORMED", message="malformed code"
            )
        colour = claims["colour"]
        if colour != "green":
            return pb.RecogniseResponse(
                request_id=request.request_id,
                reason="NOT_GREEN",
                message=f"the code is {colour}: only green is recognised",
                region=claims["region"],
                mode=pb.MODE_SHOW,
                colour=_COLOURS[colour],
            )
        statement = json.dumps(
            {
                "region": claims["region"],
                "mode": "show",
                "holder": claims["id"],
                "colour": colour,
                "code_id": claims["cid"],
                "iat": claims["iat"],
                "exp": claims["exp"],
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        return pb.RecogniseResponse(
            request_id=request.request_id,
            recognised=True,
            reason="RECOGNISED",
            message="green code recognised",
            region=claims["region"],
            mode=pb.MODE_SHOW,
            colour=pb.COLOUR_GREEN,
            attestation=pb.Attestation(
                payload=statement,
                key_id=ATTEST_KID,
                alg="EdDSA",
                signature=self._sign.sign(statement).signature,
            ),
            valid_until=claims["exp"],
        )

    async def Recognise(
        self, request: pb.RecogniseRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecogniseResponse:
        return self._decide(request)

    async def RecogniseStream(
        self,
        request_iterator: AsyncIterator[pb.RecogniseRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.RecogniseResponse]:
        async for request in request_iterator:
            yield self._decide(request)


class IdealSyncService(pb_grpc.RecognitionServiceServicer):
    """The same work on gRPC's thread-pool server (``--sync``): the cost of the server kind."""

    def __init__(self, verify_key: VerifyKey, signing_key: SigningKey) -> None:
        self._decide = IdealService(verify_key, signing_key)._decide

    def Recognise(
        self, request: pb.RecogniseRequest, context: grpc.ServicerContext
    ) -> pb.RecogniseResponse:
        return self._decide(request)

    def RecogniseStream(
        self, request_iterator: Iterator[pb.RecogniseRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.RecogniseResponse]:
        for request in request_iterator:
            yield self._decide(request)


def _credentials(tls: tuple[bytes, bytes, bytes]) -> grpc.ServerCredentials:
    cert, key, ca = tls
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def serve_sync(
    listen: str,
    verify_key: VerifyKey,
    signing_key: SigningKey,
    tls: tuple[bytes, bytes, bytes] | None = None,
    threads: int = 16,
) -> None:
    """Serve on ``grpc.server`` with a pool of ``threads`` until SIGTERM/SIGINT."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), options=SERVER_OPTIONS)
    pb_grpc.add_RecognitionServiceServicer_to_server(
        IdealSyncService(verify_key, signing_key), server
    )
    port = (
        server.add_insecure_port(listen)
        if tls is None
        else server.add_secure_port(listen, _credentials(tls))
    )
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    server.start()
    print(f"ideal serving on {listen.rsplit(':', 1)[0]}:{port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(1.0).wait()


async def serve(
    listen: str,
    verify_key: VerifyKey,
    signing_key: SigningKey,
    tls: tuple[bytes, bytes, bytes] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT; with ``tls`` (cert, key, CA PEM) over mutual TLS, like the
    gateway (client certificates are required but, unlike the gateway, their role is not read)."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    pb_grpc.add_RecognitionServiceServicer_to_server(IdealService(verify_key, signing_key), server)
    if tls is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, _credentials(tls))
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    print(f"ideal serving on {listen.rsplit(':', 1)[0]}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--verify-key", required=True, help="issuer's Ed25519 public key, hex")
    parser.add_argument("--signing-seed", help="reply key seed, hex (default: random)")
    parser.add_argument("--tls-cert", type=Path, help="server certificate (PEM): mutual TLS")
    parser.add_argument("--tls-key", type=Path, help="server key (PEM)")
    parser.add_argument("--tls-ca", type=Path, help="CA of the client certificates (PEM)")
    parser.add_argument(
        "--sync", action="store_true", help="gRPC's thread-pool server instead of grpc.aio"
    )
    opts = parser.parse_args(argv)
    seed = bytes.fromhex(opts.signing_seed) if opts.signing_seed else os.urandom(32)
    tls = None
    if opts.tls_cert:
        tls = (opts.tls_cert.read_bytes(), opts.tls_key.read_bytes(), opts.tls_ca.read_bytes())
    verify_key, signing_key = VerifyKey(bytes.fromhex(opts.verify_key)), SigningKey(seed)
    if opts.sync:
        serve_sync(opts.listen, verify_key, signing_key, tls)
    else:
        asyncio.run(serve(opts.listen, verify_key, signing_key, tls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
