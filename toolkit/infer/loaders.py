"""Exported models as functions: an .onnx file in onnxruntime, a SavedModel in TensorFlow, a .tflite
file in the LiteRT interpreter.

  load_model(path, backend, threads) -> Model: float32 NHWC images in [0, 255] -> probabilities,
  with the class names and image size read from the artifact itself (ONNX metadata_props; the
  SavedModel's labels.txt asset and serving_default input shape; labels.txt beside a .tflite file or
  one level up). `path` is an .onnx or .tflite file, a SavedModel directory or an export directory
  (its model.onnx, else its saved_model/; its model.tflite with backend "tflite").
  onnx_session(path, threads, optimization, layout) -> (session, run): every onnxruntime session of
  the toolkit (batch inference, evaluation, the parity gate at each graph optimization level).
  nonempty_batches(batches): the guard of every batch loop that calls a model (no empty batch).

TensorFlow and onnxruntime are imported inside the loaders: resolve_model answers a bad --model in
one line before either loads.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from toolkit.common.messages import one_line

BACKENDS = ("onnx", "savedmodel", "tflite")
# The artifact names of an export directory (toolkit.export.ONNX_FILES["onnx"], SAVED_MODEL, LABELS);
# repeated here to keep this module free of TensorFlow at import, and checked equal by a test.
EXPORT_ONNX, EXPORT_SAVED_MODEL, EXPORT_LABELS = "model.onnx", "saved_model", "labels.txt"
EXPORT_TFLITE = "model.tflite"
PROBABILITIES = "probabilities"


class InferenceError(ValueError):
    """A bad argument (model, inputs, output, a setting); one line naming the flag."""


@dataclasses.dataclass
class Model:
    """A loaded classifier: float32 NHWC images in [0, 255] at image_size -> probabilities."""

    backend: str
    path: str
    class_names: tuple
    image_size: int
    run: Callable[[np.ndarray], np.ndarray]
    handle: object = None  # the session / restored object the runner needs alive

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)


def resolve_model(path: str, backend: str = "auto") -> tuple:
    """(backend, artifact path) for --model and --backend; InferenceError when they do not fit."""
    if backend not in ("auto", *BACKENDS):
        raise InferenceError(f"--backend: must be auto, {' or '.join(BACKENDS)}, got {backend!r}")
    if not path:
        raise InferenceError("--model: must be set")
    if not os.path.exists(path):
        raise InferenceError(f"--model: {path} does not exist")
    if os.path.isfile(path):
        kind = {".onnx": "onnx", ".tflite": "tflite"}.get(os.path.splitext(path)[1])
        if kind is None:
            raise InferenceError(f"--model: {path} is neither an .onnx or .tflite file nor a SavedModel or export directory")
        found = {kind: path}
    elif os.path.isfile(os.path.join(path, "saved_model.pb")):
        found = {"savedmodel": path}
    else:
        found = {}
        if os.path.isfile(os.path.join(path, EXPORT_ONNX)):
            found["onnx"] = os.path.join(path, EXPORT_ONNX)
        if os.path.isfile(os.path.join(path, EXPORT_SAVED_MODEL, "saved_model.pb")):
            found["savedmodel"] = os.path.join(path, EXPORT_SAVED_MODEL)
        if os.path.isfile(os.path.join(path, EXPORT_TFLITE)):
            found["tflite"] = os.path.join(path, EXPORT_TFLITE)
        if not found:
            raise InferenceError(f"--model: {path} holds no saved_model.pb, {EXPORT_ONNX} or {EXPORT_SAVED_MODEL}/")
    if backend == "auto":
        backend = next(b for b in BACKENDS if b in found)  # an export's ONNX model is the fastest one here
    if backend not in found:
        kind = {"onnx": "an ONNX model", "savedmodel": "a SavedModel", "tflite": "a TFLite model"}[backend]
        raise InferenceError(f"--backend: {path} holds no {kind} for --backend {backend}")
    return backend, found[backend]


def load_model(path: str, backend: str = "auto", threads: int = 0) -> Model:
    """A runnable classifier from an export, a SavedModel or an .onnx file.

    Args:
      path: what resolve_model accepts (an export dir, a saved_model/ dir, an .onnx file).
      backend: "auto", "onnx", "savedmodel" or "tflite".
      threads: compute threads (0: the library's default).

    Returns:
      A Model: float32 NHWC [0, 255] images -> probabilities, with its class names and image size.
    """
    if threads < 0:
        raise InferenceError(f"--threads: must be 0 (default) or positive, got {threads}")
    backend, path = resolve_model(path, backend)
    loaders = {"onnx": _load_onnx, "savedmodel": _load_saved_model, "tflite": _load_tflite}
    return loaders[backend](path, threads)


def _labels_near(path: str) -> Optional[list]:
    """labels.txt beside an artifact or one level up (an export dir holds it beside model.onnx and saved_model/)."""
    here = os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else os.path.abspath(path)
    for folder in (here, os.path.dirname(here)):
        candidate = os.path.join(folder, EXPORT_LABELS)
        if os.path.isfile(candidate):
            with open(candidate) as f:
                return [line.rstrip("\n") for line in f if line.strip()]
    return None


def _class_names(names, num_outputs, path: str) -> tuple:
    names = list(names or _labels_near(path) or [])
    if num_outputs and not names:
        names = [str(i) for i in range(num_outputs)]
    if num_outputs and len(names) != num_outputs:
        raise InferenceError(f"--model: {path} names {len(names)} classes but outputs {num_outputs} probabilities")
    return tuple(names)


# onnxruntime's graph optimization levels by the names the toolkit records them under
OPTIMIZATION_LEVELS = ("ORT_ENABLE_ALL", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_BASIC", "ORT_DISABLE_ALL")
DEFAULT_OPTIMIZATION = "ORT_ENABLE_ALL"  # onnxruntime's own default


def onnx_session(path: str, threads: int = 0, optimization: str = DEFAULT_OPTIMIZATION, layout: Optional[str] = None) -> tuple:
    """(session, run) for an .onnx classifier in onnxruntime on the CPU: the one place sessions are made.

    run(images, output_names) -> list of arrays takes float32 NHWC images in [0, 255] and feeds
    them in the model's layout: `layout` ("nhwc" / "nchw"), else the input_layout metadata the
    export writes, else NHWC. `optimization` is one of OPTIMIZATION_LEVELS: graph optimizations
    change the arithmetic (onnxruntime 1.30 on an AMX Xeon computed the logits of a trained
    ResNet50V2 up to 4.5e-2 off with them on, to 1.4e-6 without), so the parity gate proves both
    the default and ORT_DISABLE_ALL. Raises onnxruntime's own exception for a file it cannot load.
    """
    import onnxruntime as ort

    if optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(f"unknown onnxruntime optimization level {optimization!r}; one of {', '.join(OPTIMIZATION_LEVELS)}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # one graph at a time: the parallelism is inside the convolutions
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, optimization)
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    input_name = meta.get("input_name", session.get_inputs()[0].name)
    layout = (layout or meta.get("input_layout", "NHWC")).lower()

    def run(images: np.ndarray, output_names) -> list:
        return session.run(list(output_names), {input_name: to_layout(images, layout)})

    return session, run


def to_layout(images_nhwc: np.ndarray, layout: str) -> np.ndarray:
    """float32 NHWC images as an ONNX input of `layout` ("nhwc" or "nchw") wants them."""
    images = np.asarray(images_nhwc, dtype=np.float32)
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)) if layout.lower() == "nchw" else images


def _load_onnx(path: str, threads: int) -> Model:
    try:
        session, run_outputs = onnx_session(path, threads)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for bad files
        raise InferenceError(f"--model: cannot load {path}: {one_line(e)}") from e
    meta = session.get_modelmeta().custom_metadata_map
    first = session.get_inputs()[0]
    nchw = meta.get("input_layout", "NHWC").upper() == "NCHW"
    size = meta.get("image_size") or (first.shape[2] if nchw else first.shape[1])
    if not str(size).isdigit():
        raise InferenceError(f"--model: {path} says neither its image size (metadata image_size) nor a fixed input shape")
    outputs = [o for o in session.get_outputs()]
    output = next((o for o in outputs if o.name == PROBABILITIES), outputs[0])
    width = output.shape[-1] if isinstance(output.shape[-1], int) else 0
    names = _class_names(json.loads(meta["class_names"]) if "class_names" in meta else None, width, path)

    def run(images: np.ndarray) -> np.ndarray:
        return run_outputs(images, [output.name])[0]

    return Model("onnx", path, names, int(size), run, session)


def _load_saved_model(path: str, threads: int) -> Model:
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:  # the runtime is already running (a library caller): it keeps its setting
            pass
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001
        raise InferenceError(f"--model: cannot load the SavedModel {path}: {one_line(e)}") from e
    if "serving_default" not in loaded.signatures:
        raise InferenceError(f"--model: the SavedModel {path} has no serving_default signature")
    fn = loaded.signatures["serving_default"]
    (input_name, spec), = fn.structured_input_signature[1].items()
    if spec.shape.rank != 4 or spec.shape[1] is None:
        raise InferenceError(f"--model: serving_default of {path} takes {spec.shape}, not [batch, size, size, 3] images")
    labels = getattr(loaded, "labels", None)
    names = None
    if labels is not None and hasattr(labels, "asset_path"):
        with open(labels.asset_path.numpy().decode()) as f:
            names = [line.rstrip("\n") for line in f if line.strip()]
    width = fn.structured_outputs[PROBABILITIES].shape[-1] if PROBABILITIES in fn.structured_outputs else None
    names = _class_names(names, width or 0, path)

    def run(images: np.ndarray) -> np.ndarray:
        return fn(**{input_name: tf.constant(images, tf.float32)})[PROBABILITIES].numpy()

    return Model("savedmodel", path, names, int(spec.shape[1]), run, loaded)


TFLITE_SIGNATURE = "serving_default"


def tflite_runner(path: str, threads: int = 0) -> tuple:
    """(interpreter, run) of a .tflite classifier in the LiteRT interpreter (`ai_edge_litert`).

    run(float32 NHWC images) -> {output name: array} through the serving_default signature, whose
    runner resizes the batch axis to each call's batch. threads 0: LiteRT's default.
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path, num_threads=threads or None)
    signatures = interp.get_signature_list()
    if TFLITE_SIGNATURE not in signatures:
        raise ValueError(f"{path} has no {TFLITE_SIGNATURE} signature (it has {sorted(signatures)})")
    runner = interp.get_signature_runner(TFLITE_SIGNATURE)
    (input_name,) = signatures[TFLITE_SIGNATURE]["inputs"]

    def run(images: np.ndarray) -> dict:
        return runner(**{input_name: np.ascontiguousarray(images, dtype=np.float32)})

    return interp, run


def _load_tflite(path: str, threads: int) -> Model:
    try:
        interp, run_outputs = tflite_runner(path, threads)
        runner = interp.get_signature_runner(TFLITE_SIGNATURE)
        (spec,) = runner.get_input_details().values()
    except Exception as e:  # noqa: BLE001 - LiteRT raises its own types for bad files
        raise InferenceError(f"--model: cannot load {path}: {one_line(e)}") from e
    shape = list(spec["shape_signature"])
    if len(shape) != 4 or shape[1] <= 0 or shape[3] != 3:
        raise InferenceError(f"--model: serving_default of {path} takes {shape}, not [batch, size, size, 3] images")
    size = int(shape[1])
    outputs = runner.get_output_details()
    if PROBABILITIES not in outputs:
        raise InferenceError(f"--model: {path} has no {PROBABILITIES} output in serving_default")
    names = _class_names(None, int(outputs[PROBABILITIES]["shape"][-1]), path)

    def run(images: np.ndarray) -> np.ndarray:
        return run_outputs(images)[PROBABILITIES]

    return Model("tflite", path, names, size, run, interp)


def batch_rows(batch) -> int:
    """The number of rows (images) of a batch: an array or tensor, or a tuple / list whose first item is one."""
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    shape = getattr(first, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) else len(first)


def nonempty_batches(batches: Iterable, rows: Callable[[object], int] = batch_rows) -> Iterator:
    """The batches that hold at least one row, lazily: the guard of every loop that calls a model.

    A model is never called on an empty batch. With oneDNN on, TensorFlow's conv2d returns a
    zero-size batch unchanged (input channels, not filters), so a Keras model fails on one
    (cuDNN has failed on them too); onnxruntime's calibration and sessions are spared the question.
    """
    for batch in batches:
        if rows(batch) > 0:
            yield batch
