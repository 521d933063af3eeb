"""Offline export: checkpoint -> ONNX graphs -> a versioned, parity-gated model bundle."""
