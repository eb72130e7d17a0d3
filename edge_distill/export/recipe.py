"""A quantization recipe: one way to turn a float model into a deployable one, as plain settings
(no ONNX Runtime imported: settings modules hold recipes). export/quantize.apply_recipe applies it."""

from __future__ import annotations

from dataclasses import dataclass, replace

from edge_distill.config import QuantizeConfig

SHORT_TYPES = {"QUInt8": "U8", "QInt8": "S8"}


@dataclass(frozen=True)
class QuantRecipe:
    kind: str  # "fp32" | "static" | "dynamic" | "weight_only" | "fp16"
    format: str = "QDQ"
    per_channel: bool = True
    activation_type: str = "QUInt8"
    weight_type: str = "QInt8"
    calibrate_method: str = "MinMax"
    reduce_range: bool = False
    exclude_nodes: tuple[str, ...] = ()  # kept in float
    op_types: tuple[str, ...] = ()  # the op types quantized; empty: every one ONNX Runtime quantizes
    # weight_only: MatMul weights in `bits` (8 or 4), symmetric, in blocks of `block_size`, activations
    # float; accuracy level 4 lets the kernel run int8 dot products on them (onnxruntime-genai's CPU models).
    bits: int = 8
    block_size: int = 32
    accuracy_level: int = 4

    @classmethod
    def from_config(cls, cfg: QuantizeConfig) -> "QuantRecipe":
        """The single static int8 recipe a profile asks for."""
        return cls("static", cfg.format, cfg.per_channel, cfg.activation_type, cfg.weight_type,
                   cfg.calibrate_method, cfg.reduce_range, tuple(cfg.exclude_nodes))

    @property
    def name(self) -> str:
        if self.kind in ("fp32", "fp16"):
            return self.kind
        if self.kind == "weight_only":
            return f"weight-only-int{self.bits}-b{self.block_size}"
        types = SHORT_TYPES[self.activation_type] + SHORT_TYPES[self.weight_type]
        if self.kind == "dynamic":
            parts = ["dynamic", SHORT_TYPES[self.weight_type], "pc" if self.per_channel else "pt"]
        else:
            parts = [self.format, types, "pc" if self.per_channel else "pt", self.calibrate_method]
        if self.reduce_range:
            parts.append("rr")
        if self.exclude_nodes:
            parts.append(f"float{len(self.exclude_nodes)}")
        if self.op_types:
            parts.append("+".join(self.op_types))
        return "-".join(parts)

    def keep_in_float(self, nodes: tuple[str, ...]) -> "QuantRecipe":
        return replace(self, exclude_nodes=tuple(dict.fromkeys(self.exclude_nodes + nodes)))
