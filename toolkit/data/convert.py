"""python -m toolkit.data.convert: image folders, TFDS datasets or other tools' TFRecords -> shards.

  python -m toolkit.data.convert --src photos/ --out shards/ [--max_side 256]
  python -m toolkit.data.convert --tfds_name NAME --tfds_data_dir ~/tensorflow_datasets --out shards/
  python -m toolkit.data.convert --src imagenet-tfrecords/ --label_offset 1 --out shards/

The output directory holds train-*/val-* (and test-*, when the source has a test split) TFRecord
shards in the ImageNet-style schema
(toolkit.data.schema), labels.txt and manifest.json (counts per split and class, shards, source,
options, every skipped file with its reason). It is built in a temporary directory and renamed
into place, and an existing output is only replaced with --overwrite.

Only this entry point reads flags; the work is done by plain functions:
toolkit.data.folder.convert_folder, toolkit.data.external.convert_tfds and convert_tfrecords.
Flags are defined when run as a program (or by define_flags), not on import, so importing this
module next to the trainer's flags cannot clash.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from toolkit.data import external, folder, listing, writer

FORMATS = ("auto", "folder", "tfrecord")


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """Define the converter's flags on `fv` (the global FLAGS by default)."""

    def string(name, default, help_):
        flags.DEFINE_string(name, default, help_, flag_values=fv)

    def integer(name, default, help_, lower=None):
        flags.DEFINE_integer(name, default, help_, lower_bound=lower, flag_values=fv)

    string("src", "", "Image folder (SRC/<class>/, or SRC/train/<class>/ with optional SRC/val/<class>/ and SRC/test/<class>/), "
           "or a directory of TFRecord shards.")
    string("out", "", "Output directory for shards, labels.txt and manifest.json.")
    flags.DEFINE_enum("src_format", "auto", FORMATS, "What --src holds; auto: TFRecords if it has train-*/validation-* files or a manifest.", flag_values=fv)
    string("tfds_name", "", "Convert this tensorflow-datasets dataset (prepared in --tfds_data_dir) instead of --src.")
    string("tfds_data_dir", "", "Local TFDS data dir holding --tfds_name; nothing is downloaded.")
    string("tfds_train_split", "train", "TFDS split to use for training.")
    string("tfds_val_split", "", "TFDS split to use for validation; empty: validation/val, else --val_fraction of train "
           "(a TFDS test split becomes the test split, never validation, unless named here).")
    string("tfds_image_key", "image", "TFDS image feature.")
    string("tfds_label_key", "label", "TFDS ClassLabel feature.")
    flags.DEFINE_float("val_fraction", 0.1, "Validation fraction per class drawn from train when the source has no validation "
                      "split (a test split is never used for validation).", flag_values=fv)
    integer("shard_size", 1024, "At most this many images per shard.", lower=1)
    integer("min_shards", 8, "At least this many shards per split (fewer only if a split has fewer images), so up to this many workers each read their own files.", lower=1)
    integer("workers", 0, "Parallel worker processes; 0: every core.", lower=0)
    integer("max_side", 0, "Downscale images whose SHORTER side exceeds this to exactly this (aspect kept); 0: keep sizes. 256 suits a 224 model and speeds up the input pipeline (BENCHMARKS.md).", lower=0)
    integer("jpeg_quality", 90, "JPEG quality of re-encoded images (converted formats, --max_side).", lower=1)
    integer("label_offset", 0, "TFRecord sources: subtracted from stored labels (1 for shards that count labels from 1).")
    integer("seed", 0, "Seed of the validation split and of the storage order.")
    flags.DEFINE_boolean("overwrite", False, "Replace an existing output directory (only one that holds a manifest.json).", flag_values=fv)
    flags.DEFINE_boolean("progress", True, "Show a progress bar.", flag_values=fv)


def convert_with_flags(fv: flags.FlagValues = flags.FLAGS) -> writer.Conversion:
    """Run the conversion the parsed flags describe."""
    common = dict(workers=fv.workers, max_side=fv.max_side, quality=fv.jpeg_quality, overwrite=fv.overwrite, progress=fv.progress)
    if not fv.out:
        raise writer.ConversionError("--out: must be set")
    if not 1 <= fv.jpeg_quality <= 100:
        raise writer.ConversionError(f"--jpeg_quality: must be in [1, 100], got {fv.jpeg_quality}")
    if bool(fv.src) == bool(fv.tfds_name):
        raise writer.ConversionError("--src / --tfds_name: give exactly one of them")
    if fv.tfds_name:
        return external.convert_tfds(
            fv.tfds_name,
            fv.out,
            data_dir=fv.tfds_data_dir,
            train_split=fv.tfds_train_split,
            val_split=fv.tfds_val_split,
            image_key=fv.tfds_image_key,
            label_key=fv.tfds_label_key,
            val_fraction=fv.val_fraction,
            shard_size=fv.shard_size,
            min_shards=fv.min_shards,
            seed=fv.seed,
            **common,
        )
    if not os.path.isdir(fv.src):
        raise writer.ConversionError(f"--src: {fv.src} is not a directory")
    src_format = fv.src_format
    if src_format == "auto":
        src_format = "tfrecord" if listing.holds_shards(fv.src) else "folder"
    if src_format == "tfrecord":
        return external.convert_tfrecords(fv.src, fv.out, label_offset=fv.label_offset, **common)
    return folder.convert_folder(
        fv.src,
        fv.out,
        val_fraction=fv.val_fraction,
        shard_size=fv.shard_size,
        min_shards=fv.min_shards,
        seed=fv.seed,
        **common,
    )


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        conversion = convert_with_flags(flags.FLAGS)
    except writer.ConversionError as e:
        print(f"convert: error: {e}", file=sys.stderr)
        sys.exit(1)
    print(writer.format_summary(conversion))


if __name__ == "__main__":
    define_flags()
    app.run(main)
