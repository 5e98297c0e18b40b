"""A gRPC client of TorchServe, generated at test time from the .proto files inside the installed
TorchServe's own frontend jar (inference.proto, management.proto) with grpcio-tools.

Only google/rpc/status.proto, which inference.proto imports and the jar lacks, is vendored
(tests/integration/protos/, Apache-2.0, from googleapis). TorchServe's gRPC token authorization
reads the ``authorization`` metadata: ``Bearer <key>``, the same keys as its HTTP APIs.
"""

from __future__ import annotations

import importlib
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import ts

JAR = Path(ts.__file__).parent / "frontend" / "model-server.jar"
VENDORED = Path(__file__).parent / "protos"
PROTOS = ("inference.proto", "management.proto")


def generate(out: Path) -> dict[str, ModuleType]:
    """Compile the jar's protos into ``out`` and import them: ``{"inference": <pb2>,
    "inference_grpc": <pb2_grpc>, "management": ..., "management_grpc": ..., "status": ...}``."""
    from grpc_tools import protoc

    protos = out / "protos"
    protos.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(JAR) as jar:
        for name in PROTOS:
            (protos / name).write_bytes(jar.read(name))
    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    sources = [*(str(protos / n) for n in PROTOS), str(VENDORED / "google" / "rpc" / "status.proto")]
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{protos}",
            f"-I{VENDORED}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *sources,
        ]
    )
    if code != 0:
        raise RuntimeError(f"protoc failed ({code}) on {sources}")
    sys.path.insert(0, str(out))
    try:
        return {
            "inference": importlib.import_module("inference_pb2"),
            "inference_grpc": importlib.import_module("inference_pb2_grpc"),
            "management": importlib.import_module("management_pb2"),
            "management_grpc": importlib.import_module("management_pb2_grpc"),
            "status": importlib.import_module("google.rpc.status_pb2"),
        }
    finally:
        sys.path.remove(str(out))


def bearer(key: str) -> tuple[tuple[str, str]]:
    """The call metadata TorchServe's GRPCInterceptor checks."""
    return (("authorization", f"Bearer {key}"),)
