"""Handler settings: read once from the per-model config's ``handler:`` section.

Plain Python, no TorchServe import. Unknown keys and out-of-range values stop the model
from loading with a message naming the key, so a typo in the YAML never silently does nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping


def entity_type(tag: str) -> str | None:
    """``B-PER`` / ``I-PER`` -> ``PER`` (the key of the label names); ``O`` and special labels -> None."""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BI":
        return tag[2:]
    return None


# The tutorial's Korean names for the KMOU / ratsnlp entity types.
SEED_LABEL_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "PER": "인명",
        "LOC": "지명",
        "ORG": "기관명",
        "DAT": "날짜",
        "TIM": "시간",
        "DUR": "기간",
        "MNY": "통화",
        "PNT": "비율",
        "NOH": "기타 수량표현",
        "POH": "기타",
    }
)

# KLUE-NER's six entity types (its 13 tags: B-/I- of these, and O), named as their KMOU counterparts are.
KLUE_LABEL_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "PS": "인명",
        "LC": "지명",
        "OG": "기관명",
        "DT": "날짜",
        "TI": "시간",
        "QT": "수량",
    }
)

# Every built-in name, by entity type: the label sets share no type name, so a model's label map
# (its tags' types) picks its own set's names with no setting; label_names overrides any of them.
BUILTIN_LABEL_NAMES: Mapping[str, str] = MappingProxyType({**SEED_LABEL_NAMES, **KLUE_LABEL_NAMES})

RUNTIME_CHOICES = ("auto", "torch", "onnxruntime")
QUANTIZE_CHOICES = ("none", "int8")
DTYPE_CHOICES = ("float32", "bfloat16")
BIO_DECODING_CHOICES = ("greedy", "constrained")


@dataclass(frozen=True)
class HandlerSettings:
    max_seq_length: int = 128  # tokens per model input, [CLS] and [SEP] included
    window_stride: int = 32  # tokens shared by two consecutive windows of a long text
    max_text_chars: int = 2_000  # longer texts are refused with 400
    max_texts_per_request: int = 32  # longer JSON lists are refused with 400
    max_request_tokens: int = 1664  # model-input tokens (windows, [CLS]/[SEP] included) per request; more: 413
    max_response_bytes: int = 8 * 1024 * 1024  # a larger answer is refused with 413 (keep under max_response_size)
    max_batch_tokens: int = 4096  # a forward pass holds at most this many padded tokens
    torch_threads: int = 0  # intra-op threads per worker (torch or ONNX Runtime); 0 keeps the default
    runtime: str = "auto"  # "auto": ONNX Runtime on a CPU, torch on a GPU; or "torch" / "onnxruntime" always
    quantize: str = "none"  # "int8": dynamic int8 quantization of the Linear layers (ONNX Runtime)
    dtype: str = "float32"  # "bfloat16": bf16 weights and activations (torch; a GPU, or a CPU with AVX512-BF16/AMX)
    trim_particles: bool = False  # cut Korean particles (조사) off entity ends
    bio_decoding: str = "greedy"  # "constrained": entities from the best BIO-consistent label sequence
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
                not (self.dtype == "bfloat16" and self.quantize == "int8"),
                "dtype bfloat16 and quantize int8 exclude each other",
            ),
            (
                not (self.quantize == "int8" and self.runtime == "torch"),
                "quantize int8 runs on ONNX Runtime (runtime auto on a CPU, or onnxruntime); runtime torch runs float32 or bfloat16",
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
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> "HandlerSettings":
        """Build settings from the YAML ``handler:`` mapping (missing keys keep defaults)."""
        raw = dict(raw or {})
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ValueError(
                f"handler settings: unknown key(s) {unknown}; known keys are {sorted(known)}"
            )
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "label_names":
                if not isinstance(value, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()
                ):
                    raise ValueError("handler settings: label_names must map entity types to names")
                values[key] = MappingProxyType({**BUILTIN_LABEL_NAMES, **value})
                continue
            expected = known[key].type
            kind = {"int": int, "str": str, "bool": bool}[expected]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(
                    f"handler settings: {key} must be {expected}, got {type(value).__name__} {value!r}"
                )
            values[key] = value
        return cls(**values)
