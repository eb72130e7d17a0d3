"""Torch -> ONNX export with a parity check, onnxsim simplification, and int8 quantization."""
