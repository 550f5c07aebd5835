"""Reduce py-spy's raw (collapsed) stacks to the components of bench/PROFILE.md.

    py-spy record --pid PID --native --rate 100 --format raw -o unary_fresh.txt
    python bench/profile_components.py unary_fresh.txt [more.txt ...]

Each sample goes to the component named by its innermost matching frame; samples whose leaf is a
wait (epoll, fdatasync, semaphores, futexes, libc's thread wait) are idle and not counted. Prints
each component's share of the non-idle samples.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Sequence

RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cyclic GC (gc_collect_main)", ("gc_collect_main",)),
    ("recognition log", ("reclog.py",)),
    (
        "group commit: SQLite + executor hop",
        ("keys/store", "sqlite", "Database.", "ThreadPoolExecutor", "run_in_executor"),
    ),
    (
        "Ed25519 signing (attestation, home code)",
        ("SigningKey.sign", "crypto_sign (nacl", "PrivateKey.sign"),
    ),
    (
        "verify partner signature (Ed25519, ES256, SM2)",
        ("VerifyKey", "crypto_sign_open", "PublicKey.verify", "ecdsa_sig_verify"),
    ),
    ("build + encode the home code, attestation (JSON, base64)", ("tokens.py",)),
    ("decode (adapter codecs)", ("adapters/codecs", "cbor", "zlib", "decompress", "base45")),
    (
        "translate/convert/engine (adapters, engine, keys)",
        ("adapters/", "gateway/engine.py", "keys/"),
    ),
    ("servicer: response proto + metrics", ("gateway/grpc/recognition.py", "prometheus_client")),
    (
        "interceptor + auth + request id",
        (
            "gateway/grpc/interceptors.py",
            "gateway/grpc/methods.py",
            "gateway/grpc/auth.py",
            "pki.py",
        ),
    ),
    ("ideal handler (parse, json, proto)", ("ideal_server.py",)),
    ("gRPC poller wake-up (eventfd_write)", ("eventfd_write",)),
    ("asyncio event loop (tasks, futures, callbacks)", ("asyncio/", "_asynciomodule")),
    ("gRPC (cygrpc, core, TLS, protobuf)", ("cygrpc", "grpc/", "libssl", "libcrypto", "_message")),
)
OTHER = "other (Python runtime, allocation, frees)"
_IDLE = (
    "epoll_wait", "fdatasync", "sem_wait", "sem_timedwait", "pthread_cond", "__futex", "futex",
    "poll (", "syscall", "nanosleep", "clock_nanosleep",
)  # fmt: skip
_LIBC_ADDRESS = re.compile(r"0x[0-9a-f]+ \(libc")


def components(path: str) -> tuple[int, Counter[str]]:
    """Non-idle sample count and samples per component of one raw py-spy file."""
    busy, counts = 0, Counter[str]()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            frames = stack.split(";")
            leaf = frames[-1]
            if leaf.startswith(_IDLE) or _LIBC_ADDRESS.match(leaf):
                continue
            busy += int(n)
            name = OTHER
            for frame in reversed(frames):
                hit = next((c for c, keys in RULES if any(k in frame for k in keys)), None)
                if hit is not None:
                    name = hit
                    break
            counts[name] += int(n)
    return busy, counts


def main(argv: Sequence[str] | None = None) -> int:
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("usage: python bench/profile_components.py RAW_STACKS.txt ...", file=sys.stderr)
        return 2
    for path in paths:
        busy, counts = components(path)
        print(f"== {path}: {busy} non-idle samples")
        for name, n in counts.most_common():
            print(f"  {n * 100 / max(busy, 1):5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
