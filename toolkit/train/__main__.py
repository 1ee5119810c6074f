"""python -m toolkit.train: train a ResNetV2 image classifier, then export it (SavedModel, ONNX, parity gate).

  python -m toolkit.train                                   # the built-in demo dataset, in minutes
  python -m toolkit.train --data_dir photos/ --model_dir runs/photos
  python -m toolkit.train --flagfile my.flags --data_dir shards/

--data_dir is a folder of photos (photos/<class>/..., or photos/train/<class>/ and val/) converted
once into the run directory, or TFRecord shards from python -m toolkit.data.convert. Running the
same command again resumes from the last checkpoint; --fresh starts anew. With TF_CONFIG naming
several workers, every worker runs the same command (README.md, BUILD.md).
"""

from __future__ import annotations

from toolkit import cli, config


def main(argv) -> None:
    """Train with the parsed flags; a lost worker of a multi-worker job becomes WorkerLost."""
    del argv
    import tensorflow as tf

    from toolkit import flags as flags_lib
    from toolkit.common.errors import WorkerLost
    from toolkit.train import distribute
    from toolkit.train import run as train_run

    settings = flags_lib.to_config()
    try:
        train_run.run(settings)
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
            tf.errors.CancelledError) as e:
        if distribute.tf_config_cluster()[0] < 2:
            raise
        raise WorkerLost(distribute.worker_lost_message(_cause(e), settings.train.model_dir)) from e


def _cause(e) -> str:
    """The informative line of a collective-op error (TensorFlow puts it after the graph trace)."""
    lines = [line.strip() for line in e.message.splitlines() if line.strip()]
    for line in lines:
        if "aborted by" in line or "unhealthy" in line or "Deadline" in line or "connect" in line:
            return line[:300]
    return (lines[-1] if lines else type(e).__name__)[:300]


def run_main() -> None:
    from toolkit import flags  # noqa: F401 - defines the trainer's flags (from the config sections)

    cli.run(__doc__, tuple(config.SECTIONS.values()), main, predefined=True)


if __name__ == "__main__":
    run_main()
