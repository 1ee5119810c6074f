"""python -m toolkit.train: train a ResNetV2 classifier (see --helpfull, or README.md).

A thin entry point: flags become a frozen Config once, the library does the rest. Expected
failures (a bad flag, bad data, a diverged loss) end with one line on stderr and exit code 2
(a bad flag or input, the message names the flag), 3 (training diverged), 4 (the
exported formats disagree: the export's parity gate failed) or 5 (multi-worker: a worker was lost;
run the same command on every worker again to resume).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the progress log

from absl import app  # noqa: E402

from toolkit import flags as flags_lib  # noqa: E402  (defines the flags)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import tensorflow as tf

    from toolkit.train import distribute
    from toolkit.train import run as training
    from toolkit.common.logs import error, quiet_tensorflow_logs

    quiet_tensorflow_logs(flags_lib.FLAGS["verbosity"].present)
    config = None
    try:
        config = flags_lib.to_config()
        training.run(config)
    except ValueError as e:
        message = str(e)
        if not message.startswith("--"):  # not a bad flag: a bug, show the traceback
            raise
        error(message.splitlines()[0])
        sys.exit(2)
    except training.TrainingDiverged as e:
        error(str(e))
        sys.exit(3)
    except RuntimeError as e:
        from toolkit.export.run import ParityError

        if not isinstance(e, ParityError):
            raise
        error(f"export parity gate failed: {str(e).splitlines()[0]} (artifacts kept, marked failed in export.json)")
        sys.exit(4)
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
            tf.errors.CancelledError) as e:
        if distribute.tf_config_cluster()[0] < 2 or config is None:
            raise
        latest = tf.train.latest_checkpoint(os.path.join(config.train.model_dir, "checkpoints"))
        error(f"a worker of the multi-worker job was lost ({_cause(e)}); stop every worker and run the same "
              f"command on each again to resume from the last checkpoint ({latest or 'none yet: starts over'})")
        distribute.exit_now(distribute.EXIT_CLUSTER)


def _cause(e) -> str:
    """The informative line of a collective-op error (TensorFlow puts it after the graph trace)."""
    lines = [line.strip() for line in e.message.splitlines() if line.strip()]
    for line in lines:
        if "aborted by" in line or "unhealthy" in line or "Deadline" in line or "connect" in line:
            return line[:300]
    return (lines[-1] if lines else type(e).__name__)[:300]


def run_main():
    app.run(main)


if __name__ == "__main__":
    run_main()
