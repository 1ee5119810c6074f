"""python -m toolkit.data.convert: image folders, TFDS datasets or other tools' TFRecords -> shards.

  python -m toolkit.data.convert --src photos/ --out shards/ [--max_side 256]
  python -m toolkit.data.convert --tfds_name NAME --tfds_data_dir ~/tensorflow_datasets --out shards/
  python -m toolkit.data.convert --src imagenet-tfrecords/ --label_offset 1 --out shards/

The output directory holds train-*/val-* (and test-*, when the source has a test split) TFRecord
shards in the ImageNet-style schema
(toolkit.data.schema), labels.txt and manifest.json (counts per split and class, shards, source,
options, every skipped file with its reason). It is built in a temporary directory and renamed
into place, and an existing output is only replaced with --overwrite.

`convert(ConvertConfig)` does the work through plain functions: toolkit.data.folder.convert_folder,
toolkit.data.external.convert_tfds and convert_tfrecords; flags are defined only when this module
runs as a program (toolkit.cli.run).
"""

from __future__ import annotations

import os

from toolkit import cli, config
from toolkit.config import ConvertConfig

SECTIONS = (ConvertConfig,)


def convert(c: ConvertConfig):
    """Run the conversion `c` describes; returns the writer's Conversion. ConversionError: bad input."""
    from toolkit.data import external, folder, listing, writer

    common = dict(workers=c.workers, max_side=c.max_side, quality=c.jpeg_quality, overwrite=c.overwrite, progress=c.progress)
    if not c.out:
        raise writer.ConversionError("--out: must be set")
    if not 1 <= c.jpeg_quality <= 100:
        raise writer.ConversionError(f"--jpeg_quality: must be in [1, 100], got {c.jpeg_quality}")
    if c.src_format not in config.CONVERT_FORMATS:
        raise writer.ConversionError(f"--src_format: must be one of {', '.join(config.CONVERT_FORMATS)}, got {c.src_format!r}")
    if bool(c.src) == bool(c.tfds_name):
        raise writer.ConversionError("--src / --tfds_name: give exactly one of them")
    split = dict(val_fraction=c.val_fraction, shard_size=c.shard_size, min_shards=c.min_shards, seed=c.seed)
    if c.tfds_name:
        return external.convert_tfds(c.tfds_name, c.out, data_dir=c.tfds_data_dir, train_split=c.tfds_train_split,
                                     val_split=c.tfds_val_split, image_key=c.tfds_image_key, label_key=c.tfds_label_key,
                                     **split, **common)
    if not os.path.isdir(c.src):
        raise writer.ConversionError(f"--src: {c.src} is not a directory")
    src_format = c.src_format
    if src_format == "auto":
        src_format = "tfrecord" if listing.holds_shards(c.src) else "folder"
    if src_format == "tfrecord":
        return external.convert_tfrecords(c.src, c.out, label_offset=c.label_offset, **common)
    return folder.convert_folder(c.src, c.out, **split, **common)


def main(argv) -> None:
    del argv
    from absl import flags

    from toolkit.data import writer

    print(writer.format_summary(convert(ConvertConfig(**cli.values_of(ConvertConfig, flags.FLAGS)))))


def run_main() -> None:
    cli.run(__doc__, SECTIONS, main)


if __name__ == "__main__":
    run_main()
