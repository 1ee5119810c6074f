"""A Triton Inference Server model repository of an export: the ONNX model, and the SavedModel on
request (--triton_savedmodel: Triton's TensorFlow backend is deprecated since release 25.03).

  REPO/NAME/config.pbtxt              platform onnxruntime_onnx
  REPO/NAME/labels.txt                the class names (label_filename of `probabilities`)
  REPO/NAME/1/model.onnx
  REPO/NAME_savedmodel/config.pbtxt   platform tensorflow_savedmodel (its serving_default signature)
  REPO/NAME_savedmodel/labels.txt
  REPO/NAME_savedmodel/1/model.savedmodel/

Each config.pbtxt names the model's own inputs and outputs with the dtypes and dims read from the
model files (the batch axis left to max_batch_size), and turns dynamic batching on. The model files
are hard links to the export's own when the file system allows (no second copy of the weights),
else copies; the repository is built after the parity gate has written its proof into model.onnx.
Serve it with `tritonserver --model-repository EXPORT_DIR/REPO`.
"""

from __future__ import annotations

import os
import shutil
from typing import Optional

from toolkit.common import atomic
from toolkit import layout

QUEUE_DELAY_MICROSECONDS = 100  # how long the dynamic batcher waits to fill a batch
_ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 3: "TYPE_INT8", 2: "TYPE_UINT8", 6: "TYPE_INT32", 7: "TYPE_INT64"}
_TF_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int32": "TYPE_INT32", "int64": "TYPE_INT64", "string": "TYPE_STRING"}


def onnx_tensors(path: str) -> tuple:
    """([(name, triton dtype, dims without the batch axis)] of the inputs, same of the outputs) of an .onnx file."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph

    def describe(values):
        out = []
        for v in values:
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
            out.append((v.name, _ONNX_TYPES[v.type.tensor_type.elem_type], dims[1:]))
        return out

    initializers = {t.name for t in graph.initializer}
    return describe([v for v in graph.input if v.name not in initializers]), describe(graph.output)


def saved_model_tensors(path: str, signature: str = "serving_default") -> tuple:
    """The same for a SavedModel's signature."""
    import tensorflow as tf

    fn = tf.saved_model.load(path).signatures[signature]

    def describe(specs: dict):
        return [(name, _TF_TYPES[spec.dtype.name], [-1 if d is None else int(d) for d in spec.shape.as_list()[1:]])
                for name, spec in sorted(specs.items())]

    return describe(fn.structured_input_signature[1]), describe(fn.structured_outputs)


def config_text(name: str, platform: str, max_batch_size: int, inputs: list, outputs: list, labels: str,
                labelled_output: str = "probabilities") -> str:
    """A config.pbtxt in protobuf text format (inference.ModelConfig)."""

    def tensor(kind: str, entry: tuple, last: bool) -> str:
        tensor_name, dtype, dims = entry
        lines = [f'  {{\n    name: "{tensor_name}"\n    data_type: {dtype}\n    dims: [ {", ".join(str(d) for d in dims)} ]']
        if kind == "output" and tensor_name == labelled_output:
            lines.append(f'    label_filename: "{labels}"')
        return "\n".join(lines) + ("\n  }" if last else "\n  },")

    def section(kind: str, entries: list) -> str:
        body = "\n".join(tensor(kind, e, i == len(entries) - 1) for i, e in enumerate(entries))
        return f"{kind} [\n{body}\n]"

    return (
        f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: {max_batch_size}\n'
        f"{section('input', inputs)}\n{section('output', outputs)}\n"
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {QUEUE_DELAY_MICROSECONDS}\n}}\n"
    )


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def refresh_onnx(repo: str, models: dict, onnx_path: str) -> None:
    """Point the repository's ONNX models at `onnx_path` again: a re-run of the parity gate rewrites
    model.onnx (its proof in the metadata) by renaming a new file over it, which a hard link into the
    repository does not follow. `models` is write_repository's answer (export.json's triton.models)."""
    for entry in models.values():
        if entry.get("platform") == "onnxruntime_onnx":
            target = os.path.join(repo, entry["model"])
            fresh = target + ".new"
            if os.path.exists(fresh):
                os.remove(fresh)
            _link_or_copy(onnx_path, fresh)
            os.replace(fresh, target)


def write_repository(repo: str, name: str, onnx_path: str, saved_model_dir: Optional[str], labels_path: str,
                     max_batch_size: int) -> dict:
    """Write the repository at `repo` (a new directory): the ONNX model as `name`, and with
    `saved_model_dir` the SavedModel as `name`_savedmodel (Triton's TensorFlow backend is deprecated
    since 25.03). Returns {model name: {platform, config, model}} (paths relative to repo)."""
    models = {name: ("onnxruntime_onnx", layout.ONNX, onnx_tensors(onnx_path))}
    if saved_model_dir:
        models[f"{name}_savedmodel"] = ("tensorflow_savedmodel", "model.savedmodel", saved_model_tensors(saved_model_dir))
    written = {}
    for model_name, (platform, filename, (inputs, outputs)) in models.items():
        version_dir = os.path.join(repo, model_name, layout.TRITON_VERSION)
        os.makedirs(version_dir)
        target = os.path.join(version_dir, filename)
        if platform == "onnxruntime_onnx":
            _link_or_copy(onnx_path, target)
        else:
            shutil.copytree(saved_model_dir, target, copy_function=_link_or_copy)
        shutil.copy2(labels_path, os.path.join(repo, model_name, layout.LABELS))
        text = config_text(model_name, platform, max_batch_size, inputs, outputs, layout.LABELS)
        atomic.write_text(os.path.join(repo, model_name, layout.TRITON_CONFIG), text)
        written[model_name] = {"platform": platform, "config": f"{model_name}/{layout.TRITON_CONFIG}", "model": f"{model_name}/{layout.TRITON_VERSION}/{filename}"}
    return written
