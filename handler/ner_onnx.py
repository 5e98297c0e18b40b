"""The optional ONNX Runtime path (handler setting ``runtime: onnxruntime``): plain functions,
no TorchServe import.

Packaging exports the fine-tuned ``BertForTokenClassification`` to ONNX (``model.onnx``) and,
with ``quantize: int8``, quantizes its MatMul weights to int8 with ONNX Runtime's dynamic
quantization (``model.int8.onnx``). The handler then runs that file in an
``onnxruntime.InferenceSession`` wrapped to answer like the transformers model, so the rest
of ner_core does not know which runtime it drives. ONNX files are protobuf: nothing is
unpickled. ``onnxruntime`` and ``onnx`` are imported only on this path.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import torch
from transformers.modeling_outputs import TokenClassifierOutput

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17


def onnx_file(quantize: str) -> str:
    """The archive's ONNX file for a ``quantize`` setting."""
    return "model.int8.onnx" if quantize == "int8" else "model.onnx"


def export(model: torch.nn.Module, out_dir: Path, quantize: str) -> Path:
    """Write ``model`` (fp32, eval mode) as ONNX into ``out_dir``: batch and length dynamic.
    With ``quantize == "int8"`` only the int8 file is kept. Returns the written file."""
    out_dir = Path(out_dir)
    target = out_dir / onnx_file(quantize)
    with tempfile.TemporaryDirectory(prefix="ner-onnx-") as tmp:
        fp32 = target if quantize != "int8" else Path(tmp) / "model.onnx"
        # Any ids (shapes are dynamic); a padded row, so the traced branches are a padded batch's.
        example = torch.tensor([[2, 5, 6, 3], [2, 5, 3, 0]], dtype=torch.long)
        mask = (example != 0).long()
        dynamic = {name: {0: "batch", 1: "length"} for name in (*INPUT_NAMES, "logits")}
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns about Python branches in transformers' masking code; the branches
            # it records are the ones every call takes here (a mask is always passed).
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example, mask, torch.zeros_like(example)),
                str(fp32),
                input_names=list(INPUT_NAMES),
                output_names=["logits"],
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
            )
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # it logs a hint about pre-processing, meant for CNNs
            try:
                quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8)
            finally:
                root.setLevel(level)
    return target


class OnnxTokenClassifier:
    """An ``InferenceSession`` over an exported token classifier, called like the
    transformers model: ``model(input_ids=..., attention_mask=..., token_type_ids=...).logits``."""

    device = torch.device("cpu")  # the CPU execution provider

    def __init__(self, path: Path, threads: int = 0):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default (one per core)
        options.inter_op_num_threads = 1
        # No busy-waiting between ops: a worker shares its cores with TorchServe's frontend, the
        # other workers and the clients, and ONNX Runtime's spinning threads took their CPU.
        # Measured on the demo model, 1 worker x 2 threads, batch 8: served 1.5-1.7x the
        # sentences/s at c32 and about half the p50 at c1 without spinning (docs/performance.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = Path(path)
        names = [i.name for i in self.session.get_inputs()]
        if sorted(names) != sorted(INPUT_NAMES):
            raise ValueError(f"{path.name} takes inputs {names}, expected {list(INPUT_NAMES)}")

    @property
    def num_labels(self) -> int | None:
        width = self.session.get_outputs()[0].shape[-1]
        return width if isinstance(width, int) else None

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> TokenClassifierOutput:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        (logits,) = self.session.run(["logits"], {k: v.numpy() for k, v in feed.items()})
        return TokenClassifierOutput(logits=torch.from_numpy(logits))
