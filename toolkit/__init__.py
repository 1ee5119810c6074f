"""toolkit: ResNetV2 image classifiers, from image folders to parity-checked SavedModel and ONNX exports."""

__version__ = "0.1.0"
