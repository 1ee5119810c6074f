"""python -m toolkit.evaluate: how good is an exported model on labelled images?

  python -m toolkit.evaluate --model EXPORT_DIR|model.onnx|saved_model/ --data DIR --out DIR

--data is an image folder with one subfolder per class (DIR/<class>/...), or a folder of splits
(DIR/train/, DIR/val/, DIR/test/) whose --split folder is read (DIR/test/<class>/... for
--split test), or a directory of TFRecord shards (toolkit.data.convert's, or ImageNet-style with
--label_offset 1) whose --split shards are read (test-* for --split test). Data classes are matched to the
model's by name (a subset is fine); shards without class names are taken as model indices.

Written to --out:
  metrics.json           top-1, top-5 (top-k with fewer classes), per-class precision and recall,
                         counts, the files that could not be scored and why
  confusion_matrix.png / .json
  predictions.png        a grid of sample images as the model sees them, true and predicted class,
                         wrong ones in red (up to half the grid, when there are that many)
  predictions.csv        one row per image: true class, top-k, or the reason it was not scored

Images go through toolkit.infer.predict (the shared evaluation preprocessing, decoded in parallel with
the model). Exit codes: 0 done, 1 no image could be scored, 2 a bad flag or input (one line).
Flags are defined when run as a program (or by define_flags), not on import. The work is done by
toolkit.infer.evaluate (the library); this module is its command line only.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import sys  # noqa: E402

from toolkit.infer import predict as inference  # noqa: E402
from toolkit.infer import loaders as runtimes
from toolkit.infer.evaluate import GRID, NothingScored, evaluate, read_labelled  # noqa: E402


def define_flags(fv=None) -> None:
    """Define the evaluator's flags on `fv` (the global FLAGS by default)."""
    from absl import flags

    fv = fv or flags.FLAGS
    flags.DEFINE_string("model", "", "Export dir, .onnx file or SavedModel dir.", flag_values=fv)
    flags.DEFINE_string("data", "", "Image folder with class subfolders, or a directory of TFRecord shards.", flag_values=fv)
    flags.DEFINE_string("out", "", "Directory for metrics.json, confusion_matrix.png/.json, predictions.png/.csv.", flag_values=fv)
    flags.DEFINE_string("split", "val", "Split to read: val (or validation) or test, from shards (val-*, test-*) or from a folder "
                                        "holding train/, val/, test/.", flag_values=fv)
    flags.DEFINE_enum("backend", "auto", ["auto", *runtimes.BACKENDS], "Runtime; auto follows the model.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 32, "Images per model call.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("threads", 0, "Threads of the model's computation; 0: the backend's default.", lower_bound=0, flag_values=fv)
    flags.DEFINE_integer("label_offset", 0, "Subtracted from stored labels (1 for ImageNet-style shards).", flag_values=fv)
    flags.DEFINE_integer("grid_images", GRID, "Images in predictions.png (0: none).", lower_bound=0, flag_values=fv)
    flags.DEFINE_integer("max_pixels", inference.MAX_PIXELS, "Larger images are reported, not decoded.", lower_bound=1, flag_values=fv)


def main(argv) -> None:
    """python -m toolkit.evaluate; exit 2 on bad input, 1 when no image could be scored."""
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    fv = flags.FLAGS
    try:
        if not fv.out:
            raise runtimes.InferenceError("--out: must be set")
        backend, _ = runtimes.resolve_model(fv.model, fv.backend)
        data = read_labelled(fv.data, fv.split)
        model = runtimes.load_model(fv.model, backend, fv.threads)
        from toolkit.common.logs import log

        evaluate(model, data, fv.out, fv.batch_size, fv.label_offset, fv.grid_images, fv.max_pixels, log=log)
    except runtimes.InferenceError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except NothingScored as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    from absl import app

    define_flags()
    app.run(main)
