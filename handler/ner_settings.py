"""Handler settings: read once from the per-model config's ``handler:`` section. The defaults
are the shipped values (config/model-config.yaml states each one; a test holds the two equal).

Plain Python, no TorchServe import. Unknown keys and out-of-range values stop the model
from loading with a message naming the key, so a typo in the YAML never silently does nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ner_labels import BUILTIN_LABEL_NAMES

RUNTIME_CHOICES = ("auto", "torch", "onnxruntime")
QUANTIZE_CHOICES = ("none", "int8")
DTYPE_CHOICES = ("float32", "bfloat16")
BIO_DECODING_CHOICES = ("greedy", "constrained")


def is_threshold(value: Any) -> bool:
    """Whether ``value`` can be an entity score threshold: a number, at least 0 and below 1."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1


@dataclass(frozen=True)
class HandlerSettings:
    max_seq_length: int = 128  # tokens per model input, [CLS] and [SEP] included
    window_stride: int = 32  # tokens shared by two consecutive windows of a long text
    max_text_chars: int = 2_000  # longer texts are refused with 400
    max_texts_per_request: int = 32  # longer JSON lists are refused with 400
    max_request_tokens: int = 1664  # model-input tokens (windows, [CLS]/[SEP] included) per request; more: 413
    max_response_bytes: int = 8 * 1024 * 1024  # a larger answer is refused with 413 (keep under max_response_size)
    max_batch_tokens: int = 256  # a forward pass holds at most this many padded tokens
    torch_threads: int = 1  # intra-op threads per worker (torch or ONNX Runtime); 0 keeps the default
    runtime: str = "auto"  # "auto": ONNX Runtime on a CPU, torch on a GPU; or "torch" / "onnxruntime" always
    quantize: str = "none"  # "int8": dynamic int8 quantization of the Linear layers (ONNX Runtime)
    dtype: str = "float32"  # "bfloat16": bf16 weights and activations (torch; a GPU, or a CPU with AVX512-BF16/AMX)
    trim_particles: bool = True  # cut Korean particles (조사) off entity ends
    bio_decoding: str = "constrained"  # or "greedy": the argmax tags grouped as they come
    # Entities scored below this are left out of "entities"; None: the model's own threshold
    # (config.json task_specific_params, ner_model.model_threshold), 0 when it names none.
    min_entity_score: float | None = None
    label_names: Mapping[str, str] = field(default_factory=lambda: BUILTIN_LABEL_NAMES)

    def __post_init__(self) -> None:
        checks = [
            (self.max_seq_length >= 8, "max_seq_length must be at least 8"),
            (
                0 <= self.window_stride <= (self.max_seq_length - 2) // 2,
                "window_stride must be between 0 and half the window (max_seq_length - 2) / 2",
            ),
            (self.max_text_chars >= 1, "max_text_chars must be at least 1"),
            (self.max_texts_per_request >= 1, "max_texts_per_request must be at least 1"),
            (
                self.max_request_tokens >= self.max_seq_length,
                "max_request_tokens must be at least max_seq_length (one full window)",
            ),
            (self.max_response_bytes >= 1024, "max_response_bytes must be at least 1024"),
            (
                self.max_batch_tokens >= self.max_seq_length,
                "max_batch_tokens must be at least max_seq_length",
            ),
            (self.torch_threads >= 0, "torch_threads must be 0 (torch default) or more"),
            (self.runtime in RUNTIME_CHOICES, f"runtime must be one of {RUNTIME_CHOICES}"),
            (self.quantize in QUANTIZE_CHOICES, f"quantize must be one of {QUANTIZE_CHOICES}"),
            (self.dtype in DTYPE_CHOICES, f"dtype must be one of {DTYPE_CHOICES}"),
            (self.bio_decoding in BIO_DECODING_CHOICES, f"bio_decoding must be one of {BIO_DECODING_CHOICES}"),
            (
                self.min_entity_score is None or is_threshold(self.min_entity_score),
                "min_entity_score must be null (the model's own) or at least 0 and below 1",
            ),
            (
                not (self.dtype == "bfloat16" and self.quantize == "int8"),
                "dtype bfloat16 and quantize int8 exclude each other",
            ),
            (
                not (self.quantize == "int8" and self.runtime == "torch"),
                (
                    "quantize int8 runs on ONNX Runtime (runtime auto on a CPU, or onnxruntime); "
                    "runtime torch runs float32 or bfloat16"
                ),
            ),
            (
                not (self.dtype == "bfloat16" and self.runtime == "onnxruntime"),
                "dtype bfloat16 runs on torch (runtime auto or torch); runtime onnxruntime runs float32 or int8",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"handler settings: {message}")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> HandlerSettings:
        """Build settings from the YAML ``handler:`` mapping (missing keys keep defaults)."""
        raw = dict(raw or {})
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ValueError(f"handler settings: unknown key(s) {unknown}; known keys are {sorted(known)}")
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "label_names":
                if not isinstance(value, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()
                ):
                    raise ValueError("handler settings: label_names must map entity types to names")
                values[key] = MappingProxyType({**BUILTIN_LABEL_NAMES, **value})
                continue
            expected = str(known[key].type)  # the annotation's text (from __future__ import annotations)
            kinds: dict[str, type | tuple[type, ...]] = {
                "int": int,
                "str": str,
                "bool": bool,
                "float | None": (int, float, type(None)),
            }
            kind = kinds[expected]
            if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                raise ValueError(f"handler settings: {key} must be {expected}, got {type(value).__name__} {value!r}")
            values[key] = float(value) if expected == "float | None" and isinstance(value, (int, float)) else value
        return cls(**values)
