"""ONNX artifacts: conversion of the serving function (tf2onnx), metadata, float16 and int8 variants.

The ONNX graph starts at float32 images in [0, 255] at the model's size and holds the [-1, 1]
scaling, the network and the softmax. Decoding, cropping and resizing stay outside: TensorFlow's
and onnxruntime's resize kernels differ, so clients run the shared preprocessing
(`toolkit.data.preprocess.eval_image`) themselves; the metadata says exactly what it is.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import tempfile
from typing import Iterable, Optional

import numpy as np
import onnx
import tensorflow as tf

from toolkit.common.batches import nonempty_batches
from toolkit import config as config_lib
from toolkit.common import atomic
from toolkit.infer import loaders as runtimes
from toolkit.data import preprocess
from toolkit.common.errors import BadInput

INPUT_NAME = "images"
OUTPUT_NAMES = ("probabilities", "logits")
BATCH_DIM = "batch"
LAYOUTS, MIN_OPSET, MAX_OPSET = config_lib.LAYOUTS, config_lib.MIN_OPSET, config_lib.MAX_OPSET


@contextlib.contextmanager
def _tf2onnx_settings():
    """Quiet logging, and optimizer errors raised instead of swallowed.

    By default tf2onnx deep-copies the whole graph, weights included, before each of its ~25
    optimizer passes so that it can drop a pass that throws: about half the conversion time of a
    ResNet50 (measured 42 s -> 31 s). With TF2ONNX_CATCH_ERRORS=FALSE the passes run in place and
    an error surfaces, which the export wants anyway (a parity gate follows).
    """
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    previous = os.environ.get("TF2ONNX_CATCH_ERRORS")
    logger.setLevel(logging.WARNING)
    os.environ["TF2ONNX_CATCH_ERRORS"] = "FALSE"
    try:
        yield
    finally:
        logger.setLevel(level)
        if previous is None:
            del os.environ["TF2ONNX_CATCH_ERRORS"]
        else:
            os.environ["TF2ONNX_CATCH_ERRORS"] = previous


def convert(serving_fn: tf.types.experimental.PolymorphicFunction, opset: int, layout: str) -> onnx.ModelProto:
    """The ONNX model of a serving function, through tf2onnx.

    Args:
      serving_fn: a tf.function of one float32 NHWC `images` argument -> {probabilities, logits}.
      opset: the ONNX opset (MIN_OPSET..MAX_OPSET).
      layout: "nhwc", or "nchw" for an ONNX input of [batch, 3, H, W] (a transpose is placed
        inside the graph).

    Returns:
      The onnx.ModelProto; its batch axis is dynamic and named "batch" on the input and outputs.
    """
    import tf2onnx

    if layout not in LAYOUTS:
        raise BadInput(f"--onnx_layout: must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    signature = serving_fn.input_signature
    nchw = [f"{INPUT_NAME}:0"] if layout == "nchw" else None
    with _tf2onnx_settings():
        proto, _ = tf2onnx.convert.from_function(serving_fn, input_signature=signature, opset=opset, inputs_as_nchw=nchw)
    inputs = [i.name for i in proto.graph.input]
    outputs = sorted(o.name for o in proto.graph.output)
    if inputs != [INPUT_NAME] or outputs != sorted(OUTPUT_NAMES):
        raise RuntimeError(f"tf2onnx produced inputs {inputs} and outputs {outputs}, expected {[INPUT_NAME]} and {list(OUTPUT_NAMES)}")
    for value in list(proto.graph.input) + list(proto.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = BATCH_DIM
    proto.doc_string = "ResNetV2 image classifier exported by toolkit.export; see metadata_props"
    return proto


def preprocessing_text(image_size: int, layout: str) -> str:
    """What a client must do before the ONNX graph, in words (the numbers come from preprocess.py)."""
    fraction = preprocess.CENTER_CROP_FRACTION
    order = "[batch, 3, H, W] (NCHW)" if layout == "nchw" else "[batch, H, W, 3] (NHWC)"
    return (
        f"decode JPEG/PNG to RGB; crop the centred square of side floor({fraction} * shorter side); "
        f"resize it to {image_size}x{image_size} with {preprocess.RESIZE_METHOD} interpolation "
        "(TensorFlow tf.image.resize: half-pixel centers, no antialiasing); keep float32 values in "
        f"[0, 255], do not normalize; stack as {order}. Reference implementation: "
        "toolkit.data.preprocess.eval_image. Inside the graph: x / 127.5 - 1, the network, softmax."
    )


def model_metadata(class_names, image_size: int, layout: str, toolkit_version: str, precision: str = "float32") -> dict:
    """The metadata_props written into every ONNX file of an export.

    Args:
      class_names: the names of the model's classes, in output order.
      image_size: the side of the square input images.
      layout: the input layout ("nhwc" / "nchw").
      toolkit_version: the version that wrote the file.
      precision: the weights' precision ("float32", "float16", "int8").

    Returns:
      {key: string value}, for `set_metadata`.
    """
    shape = [BATCH_DIM, 3, image_size, image_size] if layout == "nchw" else [BATCH_DIM, image_size, image_size, 3]
    return {
        "class_names": json.dumps(list(class_names)),
        "num_classes": str(len(class_names)),
        "image_size": str(image_size),
        "input_name": INPUT_NAME,
        "input_layout": layout.upper(),
        "input_shape": json.dumps(shape),
        "input_dtype": "float32",
        "input_range": "[0, 255]",
        "preprocessing": preprocessing_text(image_size, layout),
        "outputs": "probabilities: softmax over classes; logits: pre-softmax scores (both float32)",
        "weights_precision": precision,
        "toolkit_version": toolkit_version,
    }


def set_metadata(proto: onnx.ModelProto, metadata: dict) -> None:
    """Replace the model's metadata_props with `metadata` (string values)."""
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {k: str(v) for k, v in metadata.items()})


def read_metadata(path: str) -> dict:
    """The metadata_props of the .onnx file at `path`, as a dict (the weights are not loaded)."""
    model = onnx.load(path, load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def update_metadata(path: str, values: dict) -> None:
    """Merge `values` into the metadata_props of the .onnx file at `path`; the graph is untouched.
    Written beside it and renamed over it, so a reader never sees half a file."""
    model = onnx.load(path)
    set_metadata(model, {**{p.key: p.value for p in model.metadata_props}, **values})
    atomic.write_with(path, lambda tmp: onnx.save(model, tmp))


def onnxruntime_version() -> str:
    import onnxruntime as ort

    return ort.__version__


def save(proto: onnx.ModelProto, path: str) -> int:
    """Write `proto` to `path`; returns the size in bytes."""
    onnx.save(proto, path)
    return os.path.getsize(path)


def to_float16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy of the model with float32 input and outputs (clients change nothing)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)
    metadata = {p.key: p.value for p in proto.metadata_props}
    set_metadata(half, {**metadata, "weights_precision": "float16"})
    return half


def quantize_int8(float_path: str, out_path: str, calibration_batches: Iterable[np.ndarray], layout: str) -> None:
    """Static int8 quantization (QDQ, per-channel weights, MinMax calibration) of the float32 model.

    `calibration_batches` are float32 NHWC [0, 255] images (training images through eval_image).
    The stem convolution stays float32: it reads the image itself, and quantizing it cost most of
    the disagreement with float32 (the measurement is in BENCHMARKS.md, "Measurements behind code
    choices"); it is a small share of the FLOPs.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = nonempty_batches(calibration_batches)
    first = next(batches, None)
    if first is None:  # onnxruntime would calibrate on nothing and write ranges from nothing
        raise ValueError("int8 calibration: no images to calibrate on")
    batches = itertools.chain([first], batches)

    class Reader(CalibrationDataReader):
        def get_next(self) -> Optional[dict]:
            batch = next(batches, None)
            return None if batch is None else {INPUT_NAME: runtimes.to_layout(batch, layout)}

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(out_path))) as scratch:
        prepared = os.path.join(scratch, "prepared.onnx")
        # shape inference and graph optimization first, as onnxruntime recommends for static quantization
        quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
        stem = next(n.name for n in onnx.load(prepared).graph.node if n.op_type == "Conv")
        quantize_static(
            prepared,
            out_path,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=[stem],
            # MinMax keeps only each batch's per-tensor minima and maxima, so the calibration images
            # cost no memory to speak of. (onnxruntime 1.32's CalibMaxIntermediateOutputs, meant to
            # bound that, drops every full chunk's ranges: only the last chunk's would count.)
        )
    quantized = onnx.load(out_path)
    metadata = {**read_metadata(float_path), "weights_precision": "int8 (static QDQ quantization calibrated on training images)"}
    set_metadata(quantized, metadata)
    onnx.save(quantized, out_path)


def float_initializer_types(path: str) -> set:
    """The element types (onnx.TensorProto enum names) of the model's floating-point initializers."""
    model = onnx.load(path)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    return {onnx.TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer if t.data_type in floats}
