"""Datasets that come from elsewhere, converted into our shard format.

  convert_tfds        a tensorflow-datasets dataset by name, already prepared in a local data dir
                      (offline: nothing is ever downloaded)
  convert_tfrecords   ImageNet-style TFRecord shards written by other tools (`train-*`,
                      `validation-*`), with a label offset for shards that count labels from 1

Both go through the same writer as image folders (toolkit.data.writer), so every image is
decoded and checked, non-JPEG or odd-mode images become RGB JPEGs, `max_side` applies, and the
output has labels.txt and a manifest. (Shards from other tools can also be read directly, without
conversion: `read_dataset_info` accepts them and DataConfig.label_offset is applied by the
pipeline; converting them adds the checks, the counts and the manifest.)
"""

from __future__ import annotations

import os

import tensorflow as tf

from toolkit.data import folder, records, schema, shards, writer
from toolkit.data.splits import SPLITS


def _tfds_builder(name: str, data_dir: str):
    import tensorflow_datasets as tfds

    if not name:
        raise writer.ConversionError("--tfds_name: must be set")
    if not data_dir or not os.path.isdir(data_dir):
        raise writer.ConversionError(f"--tfds_data_dir: {data_dir!r} is not a directory")
    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    except Exception as e:  # DatasetNotFoundError and friends: one line, not a traceback
        raise writer.ConversionError(f"--tfds_name: cannot load {name!r} from {data_dir}: {str(e).splitlines()[0]}") from None
    if not builder.is_prepared():
        raise writer.ConversionError(
            f"--tfds_name: {name!r} is not prepared in {data_dir}; prepare it there first (this tool never downloads)"
        )
    return builder


def _tfds_examples(builder, split: str, image_key: str, label_key: str):
    """(encoded bytes, label) of a split in stored order; images are not decoded here."""
    import tensorflow_datasets as tfds

    ds = builder.as_dataset(split=split, shuffle_files=False, decoders={image_key: tfds.decode.SkipDecoding()})
    ds = ds.map(lambda ex: (ex[image_key], ex[label_key]), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.as_numpy_iterator()


def _tfds_class_names(builder, name: str, image_key: str, label_key: str) -> list:
    """The ClassLabel names, once both features are checked to be what the keys say."""
    import tensorflow_datasets as tfds

    features = builder.info.features
    for key, kind in ((image_key, tfds.features.Image), (label_key, tfds.features.ClassLabel)):
        if key not in features or not isinstance(features[key], kind):
            raise writer.ConversionError(
                f"--tfds_{'image' if kind is tfds.features.Image else 'label'}_key: {name} has no {kind.__name__} feature {key!r} "
                f"(features: {', '.join(features.keys())})"
            )
    return list(features[label_key].names)


def _tfds_val_split(splits, name: str, train_split: str, val_split: str) -> str:
    """The validation split to read ("" to draw one from the train split), the names checked."""
    if train_split not in splits:
        raise writer.ConversionError(f"--tfds_train_split: {name} has no split {train_split!r} (splits: {', '.join(splits)})")
    if val_split and val_split not in splits:
        raise writer.ConversionError(f"--tfds_val_split: {name} has no split {val_split!r} (splits: {', '.join(splits)})")
    return val_split or next((s for s in SPLITS["val"] if s in splits and s != train_split), "")


def _tfds_candidates(builder, train_split: str, val_split: str, image_key: str, label_key: str,
                     val_fraction: float, seed: int) -> dict:
    """{split: (candidates, count)}: both TFDS splits, or a stratified split of the train split."""
    import tensorflow_datasets as tfds

    def candidates(split: str, keep=None):
        for i, (encoded, label) in enumerate(_tfds_examples(builder, split, image_key, label_key)):
            if keep is None or i in keep:
                yield writer.Candidate(encoded, int(label), f"{split}[{i}]")

    splits = builder.info.splits
    test_split = _tfds_test_split(splits, train_split, val_split)
    test = {"test": (candidates(test_split), splits[test_split].num_examples)} if test_split else {}
    if val_split:
        n_train, n_val = splits[train_split].num_examples, splits[val_split].num_examples
        return {"train": (candidates(train_split), n_train), "val": (candidates(val_split), n_val), **test}
    labels_ds = builder.as_dataset(split=train_split, shuffle_files=False, decoders={image_key: tfds.decode.SkipDecoding()})
    labels = [(str(i), int(ex[label_key])) for i, ex in enumerate(labels_ds.as_numpy_iterator())]
    train_keys, val_keys = folder.stratified_split(labels, val_fraction, seed)
    train_idx, val_idx = {int(k) for k, _ in train_keys}, {int(k) for k, _ in val_keys}
    return {
        "train": (candidates(train_split, train_idx), len(train_idx)),
        "val": (candidates(train_split, val_idx), len(val_idx)),
        **test,
    }


def _tfds_test_split(splits, train_split: str, val_split: str) -> str:
    """The TFDS split written as our test split: the first of SPLITS["test"] not already used, or ""."""
    return next((s for s in SPLITS["test"] if s in splits and s not in (train_split, val_split)), "")


def convert_tfds(
    name: str,
    out: str,
    *,
    data_dir: str,
    train_split: str = "train",
    val_split: str = "",
    image_key: str = "image",
    label_key: str = "label",
    val_fraction: float = 0.1,
    shard_size: int = 1024,
    min_shards: int = 8,
    workers: int = 0,
    max_side: int = 0,
    quality: int = 90,
    overwrite: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> writer.Conversion:
    """Convert a prepared TFDS dataset (never downloads).

    Args:
      name: the TFDS dataset name; `data_dir` the directory it is prepared in.
      out: the shard directory to write.
      train_split, val_split: TFDS split names; an empty val_split takes the first of SPLITS["val"]
        that exists, else a stratified `val_fraction` drawn from the train split (with `seed`). A
        TFDS "test" split not used as either becomes our test split (never the validation split).
      image_key, label_key: the Image and ClassLabel features.
      shard_size, min_shards: at most shard_size records per shard, at least min_shards shards.
      workers, max_side, quality, overwrite, progress: as for `writer.write_dataset`.

    Returns:
      The writer.Conversion.
    """
    builder = _tfds_builder(name, data_dir)
    class_names = _tfds_class_names(builder, name, image_key, label_key)
    val_split = _tfds_val_split(builder.info.splits, name, train_split, val_split)
    plan_items = _tfds_candidates(builder, train_split, val_split, image_key, label_key, val_fraction, seed)
    plans = {
        split: writer.SplitPlan(items, total, writer.num_shards_for(total, shard_size, min_shards))
        for split, (items, total) in plan_items.items()
    }
    options = {
        "tfds_name": name,
        "tfds_version": str(builder.info.version),
        "train_split": train_split,
        "val_split": val_split or f"{val_fraction:g} of {train_split}",
        "test_split": _tfds_test_split(builder.info.splits, train_split, val_split) or None,
        "image_key": image_key,
        "label_key": label_key,
        "shard_size": shard_size,
        "min_shards": min_shards,
        "max_side": max_side,
        "jpeg_quality": quality,
        "seed": seed,
    }
    return writer.write_dataset(
        out,
        plans,
        class_names,
        f"tfds:{name} in {os.path.abspath(data_dir)}",
        options,
        max_side=max_side,
        quality=quality,
        workers=workers,
        overwrite=overwrite,
        progress=progress,
        extra={"source_kind": "tfds"},
        protect=[data_dir],
    )


def _tfrecord_candidates(path: str, shard: int, label_offset: int, class_names, skipped: list):
    """Candidates of one input shard; records that cannot be used are added to `skipped`."""
    base = os.path.basename(path)
    for record in records.read_records(path):
        where = f"{base}[{record.index}]"
        label = None if record.label is None else record.label - label_offset
        if record.corrupt:  # a corrupt or truncated shard: keep what was read
            skipped.append({"file": f"{base}[{record.index}:]", "reason": f"unreadable shard data: {record.error}"})
        elif record.error:
            skipped.append({"file": where, "reason": record.error})
        elif record.encoded is None or label is None:
            skipped.append({"file": where, "reason": f"no {schema.ENCODED} or {schema.LABEL}"})
        elif label < 0 or (class_names and label >= len(class_names)):
            skipped.append({"file": where, "reason": f"label {record.label} - offset {label_offset} is out of range"})
        else:
            yield writer.Candidate(record.encoded, label, record.filename or where, record.text or None, shard)


def convert_tfrecords(
    src: str,
    out: str,
    *,
    label_offset: int = 0,
    workers: int = 0,
    max_side: int = 0,
    quality: int = 90,
    overwrite: bool = False,
    progress: bool = True,
) -> writer.Conversion:
    """Convert ImageNet-style TFRecord shards (train-*, validation-*/val-*) into our format.

    Output shards mirror the input shards one to one. Class names come from the source's manifest
    when it is one of ours, else from each label's `image/class/text`.

    Args:
      src: the directory of the source shards.
      out: the shard directory to write.
      label_offset: subtracted from stored labels (records falling below 0 are skipped and reported).
      workers, max_side, quality, overwrite, progress: as for `writer.write_dataset`.

    Returns:
      The writer.Conversion.
    """
    try:
        info = shards.read_dataset_info(src)
    except ValueError as e:
        raise writer.ConversionError(str(e).replace("--data_dir", "--src")) from None
    # Only our own manifest says for sure which name goes with which label: other tools'
    # labels.txt files disagree on a background class and on counting from 0 or 1.
    class_names = list(info.manifest.get("class_names") or []) or None
    skipped = []
    plans = {}
    for split, files in info.files.items():
        files = sorted(files)

        def candidates(files=files):
            for shard, path in enumerate(files):
                yield from _tfrecord_candidates(path, shard, label_offset, class_names, skipped)

        plans[split] = writer.SplitPlan(candidates(), info.counts.get(split, 0), len(files))
    options = {"label_offset": label_offset, "max_side": max_side, "jpeg_quality": quality}
    return writer.write_dataset(
        out,
        plans,
        class_names,
        os.path.abspath(src),
        options,
        max_side=max_side,
        quality=quality,
        workers=workers,
        overwrite=overwrite,
        progress=progress,
        skipped=skipped,
        extra={"source_kind": "tfrecord"},
        protect=[src],
    )
