"""Exported models as functions: an .onnx file in onnxruntime, a SavedModel in TensorFlow, a .tflite
file in the LiteRT interpreter.

  load_model(path, backend, threads) -> Model: float32 NHWC images in [0, 255] -> probabilities (and
  logits),
  with the class names and image size read from the artifact itself (ONNX metadata_props; the
  SavedModel's labels.txt asset and serving_default input shape; labels.txt beside a .tflite file or
  one level up). `path` is an .onnx or .tflite file, a SavedModel directory or an export directory
  (its model.onnx, else its saved_model/; its model.tflite with backend "tflite").
  onnx_session(path, threads, optimization, layout) -> (session, run): every onnxruntime session of
  the toolkit (batch inference, evaluation, the parity gate at each graph optimization level).

TensorFlow and onnxruntime are imported inside the loaders: resolve_model answers a bad --model in
one line before either loads. A model on object storage (gs://, ram://) is read where it is by
TensorFlow (a SavedModel) and as bytes by LiteRT; onnxruntime loads a local copy of an .onnx file
(toolkit.common.storage.local_copy, removed once the session holds the model).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Optional

import numpy as np

from toolkit.common import storage
from toolkit.common.messages import one_line
from toolkit.config import BACKENDS  # noqa: F401 - the --backend choices, asked of this module too
from toolkit import layout
from toolkit.common.errors import BadInput

PROBABILITIES, LOGITS = "probabilities", "logits"  # the output names of every exported format
BYTES_SIGNATURE = "serving_bytes"  # the SavedModel's signature over encoded image files


class InferenceError(BadInput):
    """A bad argument (model, inputs, output, a setting); one line naming the flag."""


@dataclasses.dataclass
class Model:
    """A loaded classifier: float32 NHWC images in [0, 255] at image_size -> probabilities.

    `outputs(images)` gives (probabilities, logits) where the artifact has both (every export
    does): what the parity gate compares. `run_bytes(encoded)` does the same from encoded image
    files through the SavedModel's serving_bytes signature (None for other formats).
    """

    backend: str
    path: str
    class_names: tuple
    image_size: int
    run: Callable[[np.ndarray], np.ndarray]
    handle: object = None  # the session / restored object the runner needs alive
    outputs: Optional[Callable[[np.ndarray], tuple]] = None
    run_bytes: Optional[Callable[[list], tuple]] = None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)


def resolve_model(path: str, backend: str = "auto") -> tuple:
    """(backend, artifact path) for --model and --backend; InferenceError when they do not fit."""
    if backend not in ("auto", *BACKENDS):
        raise InferenceError(f"--backend: must be auto, {' or '.join(BACKENDS)}, got {backend!r}")
    if not path:
        raise InferenceError("--model: must be set")
    if not storage.exists(path, "model"):
        raise InferenceError(f"--model: {path} does not exist")
    if storage.isfile(path):
        kind = {".onnx": "onnx", ".tflite": "tflite"}.get(os.path.splitext(path)[1])
        if kind is None:
            raise InferenceError(f"--model: {path} is neither an .onnx or .tflite file nor a SavedModel or export directory")
        found = {kind: path}
    elif storage.isfile(os.path.join(path, layout.SAVED_MODEL_PB)):
        found = {"savedmodel": path}
    else:
        found = {}
        if storage.isfile(os.path.join(path, layout.ONNX)):
            found["onnx"] = os.path.join(path, layout.ONNX)
        if storage.isfile(os.path.join(path, layout.SAVED_MODEL, layout.SAVED_MODEL_PB)):
            found["savedmodel"] = os.path.join(path, layout.SAVED_MODEL)
        if storage.isfile(os.path.join(path, layout.TFLITE)):
            found["tflite"] = os.path.join(path, layout.TFLITE)
        if not found:
            raise InferenceError(f"--model: {path} holds no {layout.SAVED_MODEL_PB}, {layout.ONNX} or {layout.SAVED_MODEL}/")
    if backend == "auto":
        backend = next(b for b in BACKENDS if b in found)  # an export's ONNX model is the fastest one here
    if backend not in found:
        kind = {"onnx": "an ONNX model", "savedmodel": "a SavedModel", "tflite": "a TFLite model"}[backend]
        raise InferenceError(f"--backend: {path} holds no {kind} for --backend {backend}")
    return backend, found[backend]


def load_model(path: str, backend: str = "auto", threads: int = 0, optimization: Optional[str] = None,
               layout: Optional[str] = None) -> Model:
    """A runnable classifier from an export, a SavedModel, an .onnx or a .tflite file: the one loader
    of every exported format (batch inference, evaluation, the parity gate, the benchmarks).

    Args:
      path: what resolve_model accepts (an export dir, a saved_model/ dir, an .onnx or .tflite file).
      backend: "auto", "onnx", "savedmodel" or "tflite".
      threads: compute threads (0: the library's default).
      optimization: ONNX only: onnxruntime's graph optimization level (None: its default).
      layout: ONNX only: the input layout ("nhwc" / "nchw"; None: the model's metadata says).

    Returns:
      A Model: float32 NHWC [0, 255] images -> probabilities, with its class names and image size.
    """
    if threads < 0:
        raise InferenceError(f"--threads: must be 0 (default) or positive, got {threads}")
    backend, path = resolve_model(path, backend)
    if backend == "onnx":
        return _load_onnx(path, threads, optimization or DEFAULT_OPTIMIZATION, layout)
    return {"savedmodel": _load_saved_model, "tflite": _load_tflite}[backend](path, threads)


def _labels_near(path: str) -> Optional[list]:
    """labels.txt beside an artifact or one level up (an export dir holds it beside model.onnx and saved_model/)."""
    here = storage.parent(path) if storage.isfile(path) else storage.absolute(path)
    for folder in (here, storage.parent(here)):
        candidate = os.path.join(folder, layout.LABELS)
        if storage.isfile(candidate):
            with storage.open(candidate) as f:
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


def _load_onnx(path: str, threads: int, optimization: str, layout: Optional[str]) -> Model:
    try:
        with storage.local_copy(path) as local:  # onnxruntime reads local files; the session keeps the model
            session, run_outputs = onnx_session(local, threads, optimization, layout)
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
    both = [PROBABILITIES, LOGITS] if {PROBABILITIES, LOGITS} <= {o.name for o in outputs} else None

    def run(images: np.ndarray) -> np.ndarray:
        return run_outputs(images, [output.name])[0]

    def probabilities_and_logits(images: np.ndarray) -> tuple:
        return tuple(run_outputs(images, both))

    return Model("onnx", path, names, int(size), run, session, probabilities_and_logits if both else None)


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
        with storage.open(labels.asset_path.numpy().decode()) as f:
            names = [line.rstrip("\n") for line in f if line.strip()]
    width = fn.structured_outputs[PROBABILITIES].shape[-1] if PROBABILITIES in fn.structured_outputs else None
    names = _class_names(names, width or 0, path)

    # the closures hold `loaded`: its signatures stop working once the restored object is collected
    def outputs(images: np.ndarray) -> tuple:
        result = fn(**{input_name: tf.constant(images, tf.float32)})
        return result[PROBABILITIES].numpy(), result[LOGITS].numpy() if LOGITS in result else None

    def run(images: np.ndarray) -> np.ndarray:
        return outputs(images)[0]

    def run_bytes(encoded: list) -> tuple:
        result = loaded.signatures[BYTES_SIGNATURE](image_bytes=tf.constant(encoded, tf.string))
        return result[PROBABILITIES].numpy(), result[LOGITS].numpy()

    return Model("savedmodel", path, names, int(spec.shape[1]), run, loaded, outputs,
                 run_bytes if BYTES_SIGNATURE in loaded.signatures else None)


SERVING_SIGNATURE = "serving_default"


def _load_tflite(path: str, threads: int) -> Model:
    """A .tflite classifier in the LiteRT interpreter (`ai_edge_litert`), through its serving_default
    signature, whose runner resizes the batch axis to each call's batch."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        interp = (Interpreter(model_path=path, num_threads=threads or None) if storage.is_local(path) else
                  Interpreter(model_content=storage.read_bytes(path), num_threads=threads or None))
        signatures = interp.get_signature_list()
        if SERVING_SIGNATURE not in signatures:
            raise ValueError(f"{path} has no {SERVING_SIGNATURE} signature (it has {sorted(signatures)})")
        runner = interp.get_signature_runner(SERVING_SIGNATURE)
        (input_name,), (spec,) = signatures[SERVING_SIGNATURE]["inputs"], runner.get_input_details().values()
    except Exception as e:  # noqa: BLE001 - LiteRT raises its own types for bad files
        raise InferenceError(f"--model: cannot load {path}: {one_line(e)}") from e
    shape = list(spec["shape_signature"])
    if len(shape) != 4 or shape[1] <= 0 or shape[3] != 3:
        raise InferenceError(f"--model: serving_default of {path} takes {shape}, not [batch, size, size, 3] images")
    size = int(shape[1])
    details = runner.get_output_details()
    if PROBABILITIES not in details:
        raise InferenceError(f"--model: {path} has no {PROBABILITIES} output in serving_default")
    names = _class_names(None, int(details[PROBABILITIES]["shape"][-1]), path)

    def outputs(images: np.ndarray) -> tuple:
        result = runner(**{input_name: np.ascontiguousarray(images, dtype=np.float32)})
        return result[PROBABILITIES], result.get(LOGITS)

    def run(images: np.ndarray) -> np.ndarray:
        return outputs(images)[0]

    return Model("tflite", path, names, size, run, interp, outputs)
