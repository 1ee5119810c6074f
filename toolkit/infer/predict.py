"""Batch inference: a model over many images, through the shared evaluation preprocessing.

  list_inputs(specs)            directories (recursive), globs, image files or TFRecord files
  check_image(bytes)            None, or why the bytes cannot be scored (cheap: the header)
  predict(model, inputs, ...)   one Result per input, in input order: probabilities, or the reason
                                the input could not be scored

The model is a toolkit.infer.loaders.Model (an exported ONNX model or SavedModel); results are written
by toolkit.infer.prediction_files.

The pipeline: a Python generator reads each input and checks it cheaply with PIL (empty, not an
image, unreadable header, too many pixels); tf.data decodes, crops and resizes it with
`preprocess.eval_image` (the evaluation view used in training) on parallel threads and batches;
the model runs on the calling thread while the next batches are prepared. An input that passes
the check but still fails to decode in TensorFlow (a truncated JPEG, a format only PIL reads) is
dropped by `ignore_errors` and reported with TensorFlow's own reason.

TensorFlow is imported inside the functions that need it: a bad --inputs is reported in one line
within a second, before the heavy imports.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import io
import os
import re
import sys
import time
import warnings
from typing import Iterator, Optional, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from toolkit.common import storage
from toolkit.common.batches import nonempty_batches
from toolkit.common.errors import NothingScored
from toolkit.common.messages import one_line, op_message
from toolkit.config import MAX_PIXELS
from toolkit.data.images import signature
from toolkit.data.listing import visible_files
from toolkit.infer.loaders import InferenceError, Model

PROGRESS_BARS = {"auto": None, "on": False, "off": True}  # --progress -> tqdm's `disable` (None: when stderr is a terminal)
MAX_FILE_BYTES = 1 << 30
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords")
CHUNK = 16  # inputs the reading generator hands tf.data at once


@dataclasses.dataclass(frozen=True)
class Result:
    """What became of one input: `probabilities` (float32 [classes]) or the `error` that stopped it."""

    index: int
    input: str
    label: int = -1  # the stored label (TFRecords) or class folder index (evaluation), -1 when none
    probabilities: Optional[np.ndarray] = None
    error: Optional[str] = None
    image: Optional[np.ndarray] = None  # the model's input view (float32 [0, 255]) when asked for

    @property
    def ok(self) -> bool:
        return self.error is None

    def top_k(self, k: int) -> list:
        """[(class index, probability)] of the k most probable classes, most probable first."""
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(int(i), float(self.probabilities[i])) for i in order]


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What to score: image files (with optional labels) or TFRecord files (one image per record)."""

    files: tuple
    tfrecord: bool = False
    labels: Optional[tuple] = None  # one per image file
    count: Optional[int] = None  # number of images, when known before reading

    def __len__(self) -> int:
        return self.count or 0


def _is_tfrecord(path: str) -> bool:
    return path.endswith(TFRECORD_SUFFIXES) or bool(re.search(r"-\d{5}-of-\d{5}$", os.path.basename(path)))  # ImageNet-style shard names


def list_inputs(specs: Sequence[str]) -> Inputs:
    """Inputs from --inputs: directories (every visible file below them, sorted), globs, files.

    A directory holding TFRecord files is read as TFRecords (its labels.txt and manifest.json are
    not images); image files and TFRecord files cannot be mixed in one run.
    """
    if isinstance(specs, str):
        specs = [specs]
    files = []
    for spec in specs:
        if storage.isdir(spec):
            inside = visible_files(spec)
            records = [f for f in inside if _is_tfrecord(f)]
            files.extend(records or inside)
        elif storage.isfile(spec):
            files.append(spec)
        elif glob.has_magic(spec):
            matches = glob.glob(spec, recursive=True) if storage.is_local(spec) else storage.glob(spec)
            for match in sorted(matches):
                files.extend(visible_files(match) if storage.isdir(match) else [match])
        else:
            raise InferenceError(f"--inputs: {spec} does not exist")
    files = list(dict.fromkeys(files))
    if not files:
        raise InferenceError(f"--inputs: no files in {' '.join(specs)}")
    records = [f for f in files if _is_tfrecord(f)]
    if records and len(records) != len(files):
        raise InferenceError(f"--inputs: mixes TFRecord files ({records[0]}) with other files; give one kind")
    return Inputs(tuple(files), tfrecord=bool(records), count=None if records else len(files))


def _read(inputs: Inputs) -> Iterator[tuple]:
    """(name, label, encoded bytes or the reason there are none) per image, in order."""
    if not inputs.tfrecord:
        import tensorflow as tf  # object storage reports a file gone or unreadable with TensorFlow's errors

        labels = inputs.labels or (-1,) * len(inputs.files)
        for path, label in zip(inputs.files, labels):
            try:
                size = storage.size(path)
                if size > MAX_FILE_BYTES:
                    yield path, label, f"file too large: {size / 2**20:.0f} MB (the cap is {MAX_FILE_BYTES / 2**20:.0f} MB)"
                    continue
                with storage.open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                yield path, label, f"unreadable file: {e.strerror or e}"
            except (tf.errors.OpError, storage.StorageError) as e:  # listed, then gone or unreadable on object storage
                yield path, label, f"unreadable file: {op_message(e) if isinstance(e, tf.errors.OpError) else one_line(e)}"
            else:
                yield path, label, data
        return
    from toolkit.data import records, schema

    for path in inputs.files:
        for record in records.read_records(path):
            name = f"{path}#{record.index}"
            if record.corrupt:
                yield name, -1, f"corrupt TFRecord file (the rest of it is skipped): {record.error}"
            elif record.error:
                yield name, -1, record.error
            elif record.encoded is None:
                yield name, -1, f"record has no {schema.ENCODED}"
            else:
                yield name, -1 if record.label is None else record.label, record.encoded


def check_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Optional[str]:
    """None if the bytes look like a decodable image of at most max_pixels, else why not.

    Cheap on purpose (the header, and PIL's verify where the format has one): TensorFlow's decode
    in the pipeline is the full check.
    """
    if not data:
        return "empty file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                return (f"too many pixels: {width}x{height} = {width * height / 1e6:.1f} megapixels, "
                        f"over the cap of {max_pixels / 1e6:g} (--max_pixels)")
            image.verify()
    except Image.DecompressionBombError as e:
        return f"too many pixels: {one_line(e)}"
    except UnidentifiedImageError:
        kind = signature(data)
        return f"corrupt image: a {kind} signature but an unreadable header" if kind else "not an image (unrecognised format)"
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds on malformed files
        return f"corrupt image: {one_line(e)}"
    if width <= 0 or height <= 0:
        return "image has no pixels"
    return None


# ---------------------------------------------------------------------------------- predict


def predict(model: Model, inputs: Inputs, batch_size: int = 32, max_pixels: int = MAX_PIXELS,
            keep_images: bool = False) -> Iterator[Result]:
    """Score every input; failures are results too, never exceptions.

    Args:
      model: the runtimes.Model to run (float32 NHWC [0, 255] images -> probabilities).
      inputs: what `list_inputs` (or evaluation) found.
      batch_size: images per model call.
      max_pixels: larger images are refused before decoding.
      keep_images: also return each input's model view in `Result.image`.

    Yields:
      One Result per input, in input order.
    """
    import tensorflow as tf

    from toolkit.data import pipeline, preprocess

    if batch_size < 1:
        raise InferenceError(f"--batch_size: must be positive, got {batch_size}")
    size = model.image_size
    # Inputs between the generator and the model, by index: the generator runs ahead on a tf.data
    # thread; the loop below settles every index it has passed (CPython dict operations are atomic).
    pending, failed, state = {}, {}, {"count": 0, "error": None}

    def generate():  # CHUNK inputs per step: tf.data's call into Python costs more than reading a file
        indices, blobs = [], []
        try:
            for index, (name, label, data) in enumerate(_read(inputs)):
                reason = data if isinstance(data, str) else check_image(data, max_pixels)
                if reason:
                    failed[index] = (name, label, reason)
                else:
                    pending[index] = (name, label, data)
                    indices.append(index)
                    blobs.append(data)
                state["count"] = index + 1
                if len(indices) == CHUNK:
                    yield np.asarray(indices, np.int64), np.asarray(blobs, dtype=object)
                    indices, blobs = [], []
        except Exception as e:  # noqa: BLE001 - ignore_errors below would swallow it: re-raised at the end
            state["error"] = e
        if indices:
            yield np.asarray(indices, np.int64), np.asarray(blobs, dtype=object)

    signature = (tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.string))
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature).unbatch()

    def view(index, encoded):  # the evaluation view of training, the one shared function
        return index, preprocess.eval_image(encoded, size)

    ds = ds.map(view, num_parallel_calls=pipeline.decode_threads(), deterministic=True)
    ds = ds.ignore_errors()  # an input TensorFlow cannot decode: dropped here, reported below
    ds = ds.batch(batch_size).prefetch(2).with_options(pipeline.without_autotune())

    def unscored(start: int, stop: int) -> Iterator[Result]:
        for i in range(start, stop):
            if i in failed:
                name, label, reason = failed.pop(i)
            else:
                name, label, data = pending.pop(i)
                reason = decode_error(data, size)
            yield Result(i, name, label, error=reason)

    done = 0
    # tf.data's batch never emits an empty batch, not even when every input of one fails to
    # decode; the guard keeps that a property of this loop rather than of tf.data
    for indices, images in nonempty_batches(ds.as_numpy_iterator()):
        probabilities = np.asarray(model(images), np.float32)
        if probabilities.shape != (len(indices), len(model.class_names)):
            raise RuntimeError(f"the model returned {probabilities.shape} for {len(indices)} images and {len(model.class_names)} classes")
        for row, index in enumerate(indices):
            yield from unscored(done, index)
            name, label, _ = pending.pop(index)
            yield Result(int(index), name, label, probabilities[row], image=images[row] if keep_images else None)
            done = index + 1
    if state["error"] is not None:
        raise state["error"]
    yield from unscored(done, state["count"])


def decode_error(data: bytes, image_size: int) -> str:
    """Why `preprocess.eval_image` rejects these bytes (asked again, eagerly, for the message)."""
    import tensorflow as tf

    from toolkit.data import preprocess

    try:
        preprocess.eval_image(tf.constant(data), image_size)
    except tf.errors.OpError as e:
        return f"cannot decode: {op_message(e)}"
    return "cannot decode: failed in the input pipeline"


# ------------------------------------------------------------------------------ predict to a file
def predict_to_file(config, log=print) -> dict:
    """Score config.inputs with config.model into config.output (.csv or .jsonl): batch inference.

    Args:
      config: a toolkit.config.InferConfig.
      log: called with the summary line.

    Returns:
      {scored, failed, reasons ({reason: count}), seconds, images_per_sec}.

    Raises:
      InferenceError: a bad flag or input (before TensorFlow loads, for --model, --inputs, --output).
      NothingScored: not one input could be scored (the reasons are in the output file).
    """
    from toolkit.infer import loaders, prediction_files

    if config.progress not in PROGRESS_BARS:
        raise InferenceError(f"--progress: must be one of {', '.join(PROGRESS_BARS)}, got {config.progress!r}")
    backend, _ = loaders.resolve_model(config.model, config.backend)  # fail fast, before TensorFlow loads
    inputs = list_inputs(config.inputs)
    prediction_files.check_output(config.output)
    model = loaders.load_model(config.model, backend, config.threads)

    import tensorflow  # noqa: F401  (its start-up must not count as inference time)
    from tqdm import tqdm

    scored, failures = 0, collections.Counter()
    start = time.perf_counter()
    with prediction_files.PredictionWriter(config.output, model.class_names, config.top_k) as writer, \
            tqdm(total=inputs.count, unit="img", disable=PROGRESS_BARS[config.progress], file=sys.stderr,
                 dynamic_ncols=True, smoothing=0.1) as bar:
        for result in predict(model, inputs, config.batch_size, config.max_pixels):
            writer.write(result)
            if result.ok:
                scored += 1
            else:
                failures[result.error.split(":")[0].split(" (")[0]] += 1
                bar.set_postfix(failed=sum(failures.values()), refresh=False)
            bar.update()
    seconds = time.perf_counter() - start
    failed, rate = sum(failures.values()), scored / seconds if seconds > 0 else 0.0
    reasons = ", ".join(f"{n} {reason}" for reason, n in failures.most_common())
    log(f"infer: {scored} images scored, {failed} failed{f' ({reasons})' if reasons else ''} in {seconds:.1f} s: "
        f"{rate:.1f} images/s ({model.backend} {model.path}, batch {config.batch_size}) -> {config.output}")
    if not scored:
        raise NothingScored(f"none of the {failed} inputs could be scored (reasons in {config.output})")
    return {"scored": scored, "failed": failed, "reasons": dict(failures), "seconds": seconds, "images_per_sec": rate}
