"""edge-distill: distill a teacher into a small int8 ONNX artifact for a named device."""

__version__ = "0.1.0"
