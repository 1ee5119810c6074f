"""Score many images with an exported model: folders, globs or TFRecord files -> one .csv / .jsonl.

  python -m toolkit.infer --model EXPORT_DIR|model.onnx|saved_model/ \
      --inputs photos/ 'more/**/*.jpg' shard.tfrecord --output predictions.csv [--top_k 5]

The backend follows the model (an .onnx file: onnxruntime; a SavedModel dir: TensorFlow; an export
dir: its model.onnx), --backend forces one. Images go through the evaluation preprocessing of
training (toolkit.data.preprocess.eval_image) on parallel threads while the model runs. A file
that cannot be scored (empty, corrupt, truncated, not an image, too many pixels) gets a row with
its reason and the run goes on. The output is written to a temporary file and renamed into place.

Exit codes: 0 when at least one image was scored, 1 when none could be, 2 for a bad argument
(one line on stderr).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # libjpeg's complaint about each bad file is our row's reason already

from toolkit.infer import predict as inference  # noqa: E402  (light: TensorFlow and onnxruntime load later)
from toolkit.infer import prediction_files
from toolkit.infer import loaders as runtimes


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--model", required=True, help="export dir, .onnx file or SavedModel dir")
    parser.add_argument("--inputs", required=True, nargs="+", help="directories (recursive), globs, image files or .tfrecord files")
    parser.add_argument("--output", required=True, help="results file, .csv or .jsonl")
    parser.add_argument("--backend", default="auto", choices=("auto", *runtimes.BACKENDS))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="threads of the model's computation; 0: the backend's default (every core)")
    parser.add_argument("--top_k", type=int, default=5, help="classes per image in the output (at most the model's)")
    parser.add_argument("--max_pixels", type=int, default=inference.MAX_PIXELS, help="larger images are reported, not decoded")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar on stderr (default: when stderr is a terminal)")
    return parser.parse_args(argv)


def _check(args) -> None:
    for flag in ("batch_size", "top_k", "max_pixels"):
        if getattr(args, flag) < 1:
            raise runtimes.InferenceError(f"--{flag}: must be positive, got {getattr(args, flag)}")


def summary_line(scored: int, failures: collections.Counter, seconds: float, model, args) -> str:
    failed = sum(failures.values())
    reasons = ", ".join(f"{n} {reason}" for reason, n in failures.most_common())
    rate = scored / seconds if seconds > 0 else 0.0
    return (f"batch_infer: {scored} images scored, {failed} failed{f' ({reasons})' if reasons else ''} in {seconds:.1f} s: "
            f"{rate:.1f} images/s ({model.backend} {model.path}, batch {args.batch_size}) -> {args.output}")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        _check(args)
        backend, _ = runtimes.resolve_model(args.model, args.backend)  # fail fast, before TensorFlow loads
        inputs = inference.list_inputs(args.inputs)
        prediction_files.check_output(args.output)
        model = runtimes.load_model(args.model, backend, args.threads)
    except runtimes.InferenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import tensorflow  # noqa: F401  (its start-up must not count as inference time)
    from tqdm import tqdm

    scored, failures = 0, collections.Counter()
    start = time.perf_counter()
    with prediction_files.PredictionWriter(args.output, model.class_names, args.top_k) as writer, \
            tqdm(total=inputs.count, unit="img", disable=None if args.progress is None else not args.progress,
                 file=sys.stderr, dynamic_ncols=True, smoothing=0.1) as bar:
        for result in inference.predict(model, inputs, args.batch_size, args.max_pixels):
            writer.write(result)
            if result.ok:
                scored += 1
            else:
                failures[result.error.split(":")[0].split(" (")[0]] += 1
                bar.set_postfix(failed=sum(failures.values()), refresh=False)
            bar.update()
    seconds = time.perf_counter() - start
    print(summary_line(scored, failures, seconds, model, args), flush=True)
    if not scored:
        print(f"error: none of the {sum(failures.values())} inputs could be scored (reasons in {args.output})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
