"""Runners for the front ends: torch, ONNX Runtime or TensorRT (exported on use); imports export, engine."""
