"""Getting a trained model out of ft: exports for other runtimes (ONNX)."""
