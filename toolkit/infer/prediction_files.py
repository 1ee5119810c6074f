"""Prediction files: batch inference results as .csv or .jsonl, written atomically (on object storage,
gs:// or ram://, from a local spool: toolkit.common.atomic)."""

from __future__ import annotations

import csv
import json
import os
from typing import Sequence

from toolkit.common import atomic, storage
from toolkit.infer.loaders import InferenceError

OUTPUT_FORMATS = (".csv", ".jsonl")


def check_output(path: str) -> str:
    """The output format (".csv" or ".jsonl") of --output, once its directory is known writable."""
    fmt = os.path.splitext(path)[1].lower()
    if fmt not in OUTPUT_FORMATS:
        raise InferenceError(f"--output: {path!r} must end in {' or '.join(OUTPUT_FORMATS)}")
    if not storage.is_local(path):
        return _check_remote(path, fmt)
    if os.path.isdir(path):
        raise InferenceError(f"--output: {path} is a directory")
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise InferenceError(f"--output: cannot create {parent}: {e.strerror or e}") from e
    if not os.access(parent, os.W_OK):
        raise InferenceError(f"--output: cannot write in {parent}")
    return fmt


def _check_remote(path: str, fmt: str) -> str:
    if storage.isdir(path, "output"):
        raise InferenceError(f"--output: {path} is a directory")
    storage.makedirs(storage.parent(path), "output")
    return fmt


class PredictionWriter:
    """Results as CSV or JSON lines, in a temporary file renamed to `path` by commit().

    CSV columns: input, status (ok / failed), [label,] class_1, probability_1 ... class_k,
    probability_k, error. JSON lines: {"input", "status", ["label",] "top_k": [{"class", "index",
    "probability"}...]} or {"input", "status": "failed", "error"}. As a context manager it commits
    on success and removes the temporary file on an exception.
    """

    def __init__(self, path: str, class_names: Sequence[str], top_k: int, with_labels: bool = False):
        self.path, self.format = path, check_output(path)
        self.class_names, self.k, self.with_labels = list(class_names), max(1, min(top_k, len(class_names))), with_labels
        self._pending = atomic.AtomicFile(path, "w", newline="")
        self._file = self._pending.file
        if self.format == ".csv":
            self._csv = csv.writer(self._file)
            ranked = [c for i in range(1, self.k + 1) for c in (f"class_{i}", f"probability_{i}")]
            self._csv.writerow(["input", "status", *(["label"] if with_labels else []), *ranked, "error"])

    def _label(self, result) -> str:
        return self.class_names[result.label] if 0 <= result.label < len(self.class_names) else ""

    def write(self, result) -> None:
        top = result.top_k(self.k) if result.ok else []
        if self.format == ".csv":
            ranked = [v for i, p in top for v in (self.class_names[i], f"{p:.7g}")] or [""] * (2 * self.k)
            label = [self._label(result)] if self.with_labels else []
            self._csv.writerow([result.input, "ok" if result.ok else "failed", *label, *ranked, result.error or ""])
            return
        row = {"input": result.input, "status": "ok" if result.ok else "failed"}
        if self.with_labels:
            row["label"] = self._label(result)
        if result.ok:
            row["top_k"] = [{"class": self.class_names[i], "index": i, "probability": p} for i, p in top]
        else:
            row["error"] = result.error
        self._file.write(json.dumps(row) + "\n")

    def commit(self) -> None:
        """Put the finished file in place at `path`."""
        self._pending.commit()

    def abort(self) -> None:
        """Drop what was written; `path` keeps what it held before."""
        self._pending.abort()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.commit()
        else:
            self.abort()
        return False
