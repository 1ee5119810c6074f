"""Writing a converted dataset: parallel image preparation, shards, labels.txt and manifest.json.

Every source (image folder, TFDS, other tools' TFRecords) describes its work as one `SplitPlan`
per split: the `Candidate`s in the order they are to be stored, and a number of shards.
`write_dataset` does the rest the same way for all of them:
  - worker processes (forked, PIL only) prepare candidates in chunks (decode fully, convert,
    resize: toolkit.data.images), a bounded number in flight; JPEGs kept as they are are also
    decoded by TensorFlow in the parent, the decoder that training uses; results are consumed in
    submission order, so the output is the same whatever the number of workers;
  - records stream into shards, one open writer at a time: shard k receives the candidates at
    positions [k*total/n, (k+1)*total/n) unless a candidate names its shard; shards left empty by
    skipped files are dropped and the rest renumbered;
  - the whole output is built in a temporary sibling directory and renamed into place at the end
    (toolkit.common.atomic.directory), so an interrupted run leaves the previous output or nothing,
    never half a dataset. An output on object storage (gs://, ram://) is built in local scratch (it
    needs the dataset's size free there) and copied up, manifest.json last.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import itertools
import math
import multiprocessing
import os
import time
from typing import Iterable, NamedTuple, Optional, Sequence, Union

import tensorflow as tf
import tqdm

from toolkit.common import atomic, storage
from toolkit.data import images, schema, shards
from toolkit.common.messages import op_message
from toolkit.common.errors import BadInput

CHUNK = 8  # images per inter-process round trip
IN_FLIGHT_PER_WORKER = 4  # chunks queued per worker: enough to keep it busy, bounded memory


class ConversionError(BadInput):
    """A bad input or output location; the message is one line and names the flag."""


class Candidate(NamedTuple):
    """One image to convert."""

    source: Union[str, bytes]  # a file path (read by the worker) or the encoded bytes
    label: int
    filename: str  # stored as image/filename and named in the skip report
    text: Optional[str] = None  # class text to store; None: class_names[label]
    shard: Optional[int] = None  # output shard; None: by position


class SplitPlan(NamedTuple):
    candidates: Iterable[Candidate]
    total: int  # number of candidates (0 if unknown: only for plans whose candidates name shards)
    num_shards: int


class Conversion(NamedTuple):
    out_dir: str
    manifest: dict
    seconds: float


def num_shards_for(total: int, shard_size: int, min_shards: int) -> int:
    """Shards for `total` records: at most shard_size each, at least min_shards (but none empty)."""
    if total <= 0:
        return 0
    return min(total, max(math.ceil(total / max(1, shard_size)), min_shards))


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _is_within(path: str, root: str) -> bool:
    if not (storage.is_local(path) and storage.is_local(root)):
        path, root = path.rstrip("/"), root.rstrip("/")
        return path == root or path.startswith(root + "/")
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def check_output(out_dir: str, overwrite: bool, sources: Sequence[str] = ()) -> None:
    """Refuse (ConversionError) an output that exists without --overwrite, that is not a shard
    directory (so --overwrite never deletes anything else), or that overlaps a source."""
    if not out_dir:
        raise ConversionError("--out: must be set")
    for src in sources:
        if src and (_is_within(src, out_dir) or _is_within(out_dir, src)):
            raise ConversionError(f"--out: {out_dir} overlaps the source {src}; choose a directory outside it")
    if not storage.exists(out_dir, "out"):
        return
    if not storage.isdir(out_dir):
        raise ConversionError(f"--out: {out_dir} exists and is not a directory")
    if not storage.listdir(out_dir):
        return
    if not overwrite:
        raise ConversionError(f"--out: {out_dir} already exists; pass --overwrite to replace it")
    if not storage.exists(os.path.join(out_dir, shards.MANIFEST)) and not _interrupted_upload(out_dir):
        raise ConversionError(
            f"--out: {out_dir} exists and is not a shard directory (no {shards.MANIFEST}); refusing to replace it"
        )


def _interrupted_upload(out_dir: str) -> bool:
    """A shard directory on object storage whose copy-up a crash cut short: shards and labels.txt,
    no manifest yet (toolkit.common.atomic.publish_directory writes it last)."""
    names = [] if storage.is_local(out_dir) else storage.listdir(out_dir)
    return bool(names) and all(n == shards.LABELS or n.endswith(".tfrecord") for n in names)


def _worker_context():
    """fork where available. The workers only run PIL/numpy code (toolkit.data.images), never
    TensorFlow, so forking a parent with TensorFlow threads is safe for them; spawn and forkserver
    would instead re-import the caller's main module, TensorFlow included, in every worker (and
    fail outright in an unguarded script)."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _chunks(iterable: Iterable, size: int):
    iterator = iter(iterable)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def tf_decode_error(data: bytes) -> Optional[str]:
    """None if TensorFlow's JPEG decoder (the one training reads with) accepts the bytes, else why not.

    PIL shrugs off some corrupt entropy data that libjpeg only warns about; TensorFlow fails on it,
    which would stop a training run mid-epoch. ratio=8 still reads every byte (the errors are the
    same) but skips most of the inverse DCT, so the check costs a fraction of a decode.
    """
    try:
        tf.io.decode_jpeg(data, channels=3, ratio=8)
        return None
    except tf.errors.OpError as e:
        return f"corrupt image: TensorFlow's JPEG decoder rejects it ({op_message(e)})"


def _verified(results: list, threads) -> list:
    """Stored-as-is JPEGs must also pass tf_decode_error; re-encoded ones are ours, valid by making."""
    kept = [i for i, r in enumerate(results) if not isinstance(r, str) and r.action == "kept"]
    errors = threads.map(lambda i: tf_decode_error(results[i].data), kept) if threads else map(lambda i: tf_decode_error(results[i].data), kept)
    results = list(results)
    for i, error in zip(kept, errors):
        if error:
            results[i] = error
    return results


def _prepared(candidates: Iterable[Candidate], pool, threads, max_side: int, quality: int, window: int):
    """(candidate without its bytes, Prepared or skip reason) in candidate order."""
    if pool is None:
        for chunk in _chunks(candidates, CHUNK):
            results = [images.prepare_task((c.source, max_side, quality)) for c in chunk]
            yield from zip((c._replace(source=None) for c in chunk), _verified(results, threads))
        return
    pending = collections.deque()

    def oldest():
        metas, future = pending.popleft()
        yield from zip(metas, _verified(future.result(), threads))

    for chunk in _chunks(candidates, CHUNK):
        tasks = [(c.source, max_side, quality) for c in chunk]
        metas = [c._replace(source=None) for c in chunk]  # don't hold the bytes twice
        pending.append((metas, pool.submit(images.prepare_tasks, tasks)))
        if len(pending) >= window:
            yield from oldest()
    while pending:
        yield from oldest()


class _SplitWriter:
    """Streams one split's records into consecutive shards inside the temporary directory."""

    def __init__(self, directory: str, split: str):
        self.directory, self.split = directory, split
        self.index, self.writer = -1, None
        self.counts = {}  # shard index -> records

    def write(self, shard: int, record: bytes) -> None:
        if shard != self.index:
            if shard < self.index:
                raise ValueError(f"{self.split}: shard {shard} comes after shard {self.index}")
            self._close_current()
            self.index = shard
            self.writer = tf.io.TFRecordWriter(self._partial(shard))
            self.counts[shard] = 0
        self.writer.write(record)
        self.counts[shard] += 1

    def _partial(self, shard: int) -> str:
        return os.path.join(self.directory, f"{self.split}-{shard:05d}.partial")

    def _close_current(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def finish(self) -> tuple:
        """Rename the non-empty shards to their final names; returns (names, counts)."""
        self._close_current()
        kept = [k for k in sorted(self.counts) if self.counts[k] > 0]
        names = []
        for i, k in enumerate(kept):
            names.append(shards.shard_name(self.split, i, len(kept)))
            atomic.publish(self._partial(k), os.path.join(self.directory, names[-1]))
        for k in self.counts:
            if self.counts[k] == 0 and os.path.exists(self._partial(k)):
                os.remove(self._partial(k))
        return names, [self.counts[k] for k in kept]


def _derived_class_names(texts: dict) -> list:
    size = max(texts) + 1 if texts else 0
    return [texts.get(k) or f"class_{k}" for k in range(size)]


def write_dataset(
    out_dir: str,
    plans: dict,
    class_names: Optional[Sequence[str]],
    source: str,
    options: dict,
    *,
    max_side: int = 0,
    quality: int = 90,
    workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    skipped: Sequence[dict] = (),
    extra: Optional[dict] = None,
    protect: Sequence[str] = (),
) -> Conversion:
    """Prepare and write every split of `plans` into `out_dir`, replacing it as a whole.

    Args:
      out_dir: the shard directory to (re)write; see `check_output` for what is refused.
      plans: {split: SplitPlan}.
      class_names: the names of labels 0..n-1; None derives them from the candidates' texts.
      source: what the manifest names as the source.
      options: the conversion options the manifest records.
      max_side, quality: downscale images whose shorter side exceeds max_side (0: never); JPEG
        quality of re-encoded images.
      workers: worker processes preparing images (0: one per core).
      overwrite: replace an existing shard directory.
      progress: show a tqdm bar.
      skipped: what the source rejected (a list it may keep appending while its candidates are read).
      extra: more manifest keys.
      protect: source paths the output must not overlap.

    Returns:
      A Conversion: the output directory, its manifest and the seconds taken.
    """
    start = time.monotonic()
    out_dir = storage.absolute(out_dir)
    check_output(out_dir, overwrite, protect)
    workers = workers if workers > 0 else default_workers()
    pool = threads = None
    total = sum(plan.total for plan in plans.values())
    bar = tqdm.tqdm(total=total or None, unit="img", desc="convert", disable=not progress, mininterval=0.5)
    tally = _Tally()
    try:
        with atomic.directory(out_dir, last=shards.MANIFEST) as tmp:
            if workers > 1:
                pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=_worker_context())
                threads = concurrent.futures.ThreadPoolExecutor(workers)
            prepare = functools.partial(_prepared, pool=pool, threads=threads, max_side=max_side, quality=quality,
                                        window=max(2, workers * IN_FLIGHT_PER_WORKER))
            splits = {split: _write_split(tmp, split, plan, prepare, class_names, tally, bar, skipped)
                      for split, plan in plans.items()}
            bar.close()
            class_names = list(_derived_class_names(tally.texts) if class_names is None else class_names)
            manifest = {"format": shards.MANIFEST_FORMAT, "source": source, **(extra or {})}
            manifest.update(
                class_names=class_names,
                splits={split: _split_entry(entry, class_names) for split, entry in splits.items()},
                options=options,
                skipped=list(skipped) + tally.rejected,
                stats={
                    "stored_as_is": tally.actions["kept"],
                    "reencoded": tally.actions["reencoded"],
                    "resized": tally.actions["resized"],
                    "bytes": tally.bytes_written,
                },
            )
            shards.write_labels(tmp, class_names)
            atomic.write_json(os.path.join(tmp, shards.MANIFEST), manifest)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            threads.shutdown(wait=True, cancel_futures=True)
    return Conversion(out_dir, manifest, time.monotonic() - start)


class _Tally:
    """What every split's writing adds up: rejected images, actions, class texts, bytes."""

    def __init__(self):
        self.rejected = []  # images the workers could not use
        self.actions = collections.Counter()
        self.texts = {}  # label -> the first class text seen (when class names are derived)
        self.bytes_written = 0


def _write_split(tmp: str, split: str, plan: SplitPlan, prepare, class_names, tally: _Tally, bar, skipped) -> dict:
    """Write one split's shards into `tmp`: {count, labels (a Counter), shards, shard_counts}."""
    writer = _SplitWriter(tmp, split)
    labels = collections.Counter()
    n_shards = max(1, plan.num_shards)
    for position, (candidate, result) in enumerate(prepare(plan.candidates)):
        bar.update(1)
        if isinstance(result, str):
            tally.rejected.append({"file": candidate.filename, "reason": result})
            bar.set_postfix(skipped=len(skipped) + len(tally.rejected), refresh=False)
            continue
        label = int(candidate.label)
        if class_names is not None:
            text = class_names[label] if candidate.text is None else candidate.text
        else:
            text = candidate.text or ""
            tally.texts.setdefault(label, text)
        shard = candidate.shard
        if shard is None:
            shard = min(n_shards - 1, position * n_shards // max(1, plan.total))
        record = schema.encode_example(result.data, label, text, result.height, result.width, candidate.filename)
        writer.write(shard, record)
        labels[label] += 1
        tally.actions[result.action] += 1
        tally.bytes_written += len(record)
    names, counts = writer.finish()
    return {"count": sum(counts), "labels": labels, "shards": names, "shard_counts": counts}


def _split_entry(entry: dict, class_names: Sequence[str]) -> dict:
    """A split's manifest entry: count, per_class (by name), shards, shard_counts."""
    by_label = entry["labels"]
    return {
        "count": entry["count"],
        "per_class": {name: by_label.get(k, 0) for k, name in enumerate(class_names)},
        "shards": entry["shards"],
        "shard_counts": entry["shard_counts"],
    }


def format_summary(conversion: Conversion) -> str:
    """A few lines for the end of a run: counts per split and class, skips, size, speed."""
    m = conversion.manifest
    converted = sum(s["count"] for s in m["splits"].values())
    seconds = max(conversion.seconds, 1e-9)
    lines = [f"converted {converted} images from {m['source']} in {seconds:.1f} s ({converted / seconds:.0f} img/s)"]
    for split, s in m["splits"].items():
        classes = ", ".join(f"{name} {n}" for name, n in list(s["per_class"].items())[:10])
        more = " ..." if len(s["per_class"]) > 10 else ""
        lines.append(f"  {split:5s} {s['count']:7d} images in {len(s['shards'])} shards ({classes}{more})")
    st = m["stats"]
    lines.append(
        f"  stored as-is {st['stored_as_is']}, re-encoded {st['reencoded']}, resized {st['resized']}; "
        f"{st['bytes'] / 1e6:.1f} MB of records"
    )
    lines.append(f"  skipped {len(m['skipped'])}")
    for entry in m["skipped"][:20]:
        lines.append(f"    {entry['file']}: {entry['reason']}")
    if len(m["skipped"]) > 20:
        lines.append(f"    ... {len(m['skipped']) - 20} more in {shards.MANIFEST}")
    lines.append(f"-> {conversion.out_dir}")
    return "\n".join(lines)
