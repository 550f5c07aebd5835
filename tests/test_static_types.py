"""The generated gRPC code is excluded from mypy, but its stubs still type the code that uses it.

``gateway/api`` is generated (``tools/gen_proto.py``) and excluded from the check itself; its
mypy-protobuf ``.pyi`` stubs are what makes a wrong field or a wrong message type in a consumer
an error under ``mypy --strict`` (``.ci/lint``). This guards against a configuration change that
would quietly make them ``Any``. Needs the ``lint`` extra (installed by ``.ci/run``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="the lint extra is not installed (pip install -e '.[lint]')")
pytestmark = pytest.mark.integration  # mypy runs in a subprocess

REPO = Path(__file__).resolve().parent.parent

CONSUMER = """\
import grpc
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc

stub = pb_grpc.RecognitionServiceStub(grpc.aio.insecure_channel("localhost:1"))
reveal_type(stub.Recognise)
request = pb.RecogniseRequest(code=1)
"""


@pytest.mark.integration
def test_generated_stubs_type_their_consumers(tmp_path: Path) -> None:
    consumer = tmp_path / "consumer.py"
    consumer.write_text(CONSUMER)
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(REPO / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "cache"), str(consumer)],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert (
        'Revealed type is "grpc.aio.UnaryUnaryMultiCallable['
        "gateway.api.v1.recognition_pb2.RecogniseRequest, "
        'gateway.api.v1.recognition_pb2.RecogniseResponse]"'
    ) in out
    wrong_field = 'Argument "code" to "RecogniseRequest" has incompatible type "int"; expected'
    assert wrong_field in out
    assert "Found 1 error" in out, out
