"""python -m toolkit.parity: re-run the parity gate on an existing export.

  python -m toolkit.parity --export_dir DIR [--model_dir RUN] [--data_dir SHARDS] [--parity_images N]

After copying an export, or touching it: compares Keras, the SavedModel and the ONNX models again
(toolkit.export.run.verify_export; the arithmetic is toolkit.export.compare) and updates the export's
parity.json and export.json. Exit code 4 when the gate fails (as for toolkit.train and
toolkit.export), 2 for bad input.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # before TensorFlow is imported: keep its C++ start-up chatter out of the log
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS_USED = ("export_dir", "model_dir", "data_dir", "parity_images", "parity_atol")


def main(argv):
    """Re-check --export_dir; exits 2 on bad input, 4 when the gate fails."""
    from absl import app, flags

    from toolkit.export import run as exporting
    from toolkit.common.logs import error, log, quiet_tensorflow_logs

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    quiet_tensorflow_logs(FLAGS["verbosity"].present)
    try:
        result = exporting.verify_export(
            FLAGS.export_dir,
            model_dir=FLAGS.model_dir if FLAGS["model_dir"].present else None,
            parity_images=FLAGS.parity_images,
            atol=FLAGS.parity_atol,
            data_dir=FLAGS.data_dir or None,
            log=log,
        )
    except ValueError as e:
        error(str(e).splitlines()[0])
        sys.exit(2)
    if not result["passed"]:
        error(f"parity gate FAILED for {FLAGS.export_dir}: " + "; ".join(result["failures"]))
        sys.exit(4)


if __name__ == "__main__":
    from absl import app, flags

    from toolkit import flags as flags_lib

    for name in FLAGS_USED:
        flags.declare_key_flag(name, flags_lib.FLAGS)
    app.run(main)
