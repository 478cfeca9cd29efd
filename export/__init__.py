"""ONNX export per component, ONNX Runtime runners, TensorRT engines; imports engine (never server)."""
