"""The gRPC inference service (ONNX Runtime; no torch)."""

__version__ = "0.4.0"
