"""Releasing a trained model: ONNX export with parity, TensorRT engines, the MLflow registry."""
