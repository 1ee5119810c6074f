"""The one TFRecord reader outside training: records of tf.train.Example images, parsed in Python.

Batch inference and evaluation over records (toolkit.infer.predict), foreign shards
(toolkit.data.external), the parity gate and int8 calibration (`image_batches`) all read here.
A record that is not an Example, and a file that is corrupt from some record on, become `Record`s
carrying an `error` instead of exceptions, so each caller decides whether to skip, report or stop.
toolkit.data.pipeline keeps its own tuned tf.data reader for training.

TensorFlow is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Sequence

from toolkit.data import schema
from toolkit.common.messages import one_line, op_message

BATCH_SIZE = 32
CYCLE_LENGTH = 16  # files read side by side by `interleaved`


@dataclasses.dataclass(frozen=True)
class Record:
    """One record of a TFRecord file, or why it (or the rest of the file) cannot be read.

    `encoded`, `label`, `text` and `filename` are None when the Example lacks them. `corrupt`
    means the file cannot be read from `index` on; `error` says why in one line.
    """

    path: str
    index: int
    encoded: Optional[bytes] = None
    label: Optional[int] = None
    text: Optional[str] = None
    filename: Optional[str] = None
    error: Optional[str] = None
    corrupt: bool = False


def _first(feature, key: str, kind: str):
    if key not in feature:
        return None
    values = getattr(feature[key], kind).value
    return values[0] if len(values) else None


def _decoded(value: Optional[bytes]) -> Optional[str]:
    return value.decode("utf-8", "replace") if value is not None else None


def parse(path: str, index: int, data: bytes) -> Record:
    """The Record of serialized bytes `data`, record `index` of the file at `path`."""
    import tensorflow as tf

    try:
        feature = tf.train.Example.FromString(data).features.feature
    except Exception as e:  # noqa: BLE001 - protobuf raises several kinds on bytes that are not an Example
        return Record(path, index, error=f"not a tf.train.Example: {one_line(e)}")
    label = _first(feature, schema.LABEL, "int64_list")
    return Record(
        path,
        index,
        encoded=_first(feature, schema.ENCODED, "bytes_list"),
        label=int(label) if label is not None else None,
        text=_decoded(_first(feature, schema.TEXT, "bytes_list")),
        filename=_decoded(_first(feature, schema.FILENAME, "bytes_list")),
    )


def read_records(path: str) -> Iterator[Record]:
    """Every record of one TFRecord file in order; a corrupt file ends with a `corrupt` Record."""
    import tensorflow as tf

    index = 0
    try:
        for data in tf.data.TFRecordDataset(path).as_numpy_iterator():
            yield parse(path, index, data)
            index += 1
    except tf.errors.OpError as e:
        yield Record(path, index, error=op_message(e), corrupt=True)


def interleaved(files: Sequence[str], limit: int = 0) -> Iterator[Record]:
    """Records of several files, one from each in turn: the first `limit` (0: all) span every file.

    Files are taken in sorted order, CYCLE_LENGTH at a time; when one ends the next file takes its
    place in the cycle: the order of tf.data's `interleave` with block_length 1 (the evaluation
    pipeline's), which the tests check.
    """
    pending = iter(sorted(files))
    cycle = [read_records(path) for path in _take(pending, CYCLE_LENGTH)]
    produced, position = 0, 0
    while cycle and (not limit or produced < limit):
        position %= len(cycle)
        record = next(cycle[position], None)
        if record is None:
            replacement = _take(pending, 1)
            if replacement:  # the next file takes the slot; its turn comes in the next round
                cycle[position] = read_records(replacement[0])
                position += 1
            else:
                del cycle[position]
            continue
        yield record
        produced += 1
        position += 1


def _take(iterator, n: int) -> list:
    return [path for _, path in zip(range(n), iterator)]


def image_batches(
    files: Sequence[str], image_size: int, limit: int = 0, batch_size: int = BATCH_SIZE, label_offset: int = 0
) -> Iterator[tuple]:
    """Batches of the evaluation view of labelled records, for the parity gate and int8 calibration.

    Args:
      files: TFRecord files of Examples (read in `interleaved` order).
      image_size: the side of the square images.
      limit: the number of records read (0: all).
      batch_size: images per batch (the last may be smaller).
      label_offset: subtracted from the stored labels.

    Yields:
      (float32 NHWC images in [0, 255] through `preprocess.eval_image`, list of encoded bytes,
      int32 labels).

    Raises:
      ValueError: a record that cannot be used (not an Example, no image or label, a corrupt file).
    """
    import tensorflow as tf

    from toolkit.data import pipeline, preprocess

    failures = []  # the generator stops at the first unusable record; raised once the batches before it are out

    def generate():
        for record in interleaved(files, limit):
            if record.error or record.encoded is None or record.label is None:
                failures.append(f"{record.path}[{record.index}]: {record.error or f'no {schema.ENCODED} or {schema.LABEL}'}")
                return
            yield record.encoded, record.label - label_offset

    signature = (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32))
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
    ds = ds.map(lambda encoded, label: (preprocess.eval_image(encoded, image_size), encoded, label),
                num_parallel_calls=pipeline.decode_threads(), deterministic=True)
    for images, encoded, labels in ds.batch(batch_size).prefetch(1).with_options(pipeline.without_autotune()).as_numpy_iterator():
        yield images, list(encoded), labels
    if failures:
        raise ValueError(failures[0])
