"""python -m toolkit.evaluate: how good is an exported model on labelled images?

  python -m toolkit.evaluate --model EXPORT_DIR|model.onnx|model.tflite|saved_model/ --data DIR --out DIR

--data is an image folder with one subfolder per class (DIR/<class>/...), or a folder of splits
(DIR/train/, DIR/val/, DIR/test/) whose --split folder is read, or a directory of TFRecord shards
(toolkit.data.convert's, or ImageNet-style with --label_offset 1) whose --split shards are read.
Data classes are matched to the model's by name (a subset is fine); shards without class names are
taken as model indices. Written to --out: metrics.json (top-1, top-5, per-class precision and
recall, the files that could not be scored and why), confusion_matrix.png/.json, predictions.png
(sample images as the model sees them, wrong ones in red) and predictions.csv (one row per image).
"""

from __future__ import annotations

from toolkit import cli, config

SECTIONS = (config.EvaluateConfig,)


def main(argv) -> None:
    del argv
    from absl import flags

    from toolkit.infer.evaluate import evaluate_config

    evaluate_config(config.EvaluateConfig(**cli.values_of(config.EvaluateConfig, flags.FLAGS)))


def run_main() -> None:
    cli.run(__doc__, SECTIONS, main, tf_log_level="3")


if __name__ == "__main__":
    run_main()
