"""Batches for a model: how many rows a batch holds, and the guard that no model is ever called
on an empty one. No TensorFlow here."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator


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
