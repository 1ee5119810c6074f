"""Export: `python -m toolkit.export` (__main__), a trained run to SavedModel, ONNX and TFLite files, proven by the parity gate."""
