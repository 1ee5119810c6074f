"""python -m toolkit.infer: score many images with an exported model into one .csv or .jsonl file.

  python -m toolkit.infer --model EXPORT_DIR|model.onnx|model.tflite|saved_model/ \
      --output predictions.csv photos/ 'more/**/*.jpg' shard.tfrecord [--top_k 5]

Inputs are directories (read recursively), globs, image files or TFRecord files, listed after the
flags or given with --inputs (repeatable). The backend follows the model (an export dir: its
model.onnx; .onnx: onnxruntime; .tflite: LiteRT; a SavedModel dir: TensorFlow); --backend forces
one. Images go through the evaluation preprocessing of training on parallel threads while the
model runs. A file that cannot be scored (empty, corrupt, truncated, not an image, too many
pixels) gets a row with its reason and the run goes on; the output is written to a temporary file
and renamed into place.
"""

from __future__ import annotations

import dataclasses

from toolkit import cli, config

SECTIONS = (config.InferConfig,)


def main(argv) -> None:
    """Batch inference over --inputs and the positional arguments."""
    from absl import flags

    from toolkit.infer.predict import predict_to_file

    settings = config.InferConfig(**cli.values_of(config.InferConfig, flags.FLAGS))
    predict_to_file(dataclasses.replace(settings, inputs=settings.inputs + tuple(argv)), log=print)


def run_main() -> None:
    # libjpeg's complaint about each bad file would repeat the reason the output file gives
    cli.run(__doc__, SECTIONS, main, positional=True, tf_log_level="3")


if __name__ == "__main__":
    run_main()
