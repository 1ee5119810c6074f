"""python -m toolkit.export: export a trained run (float32 SavedModel, ONNX, parity gate).

  python -m toolkit.export --model_dir RUN [--export_dir DIR] [--onnx_fp16] [--onnx_int8] [--tflite] [--tflite_int8]
      [--triton_repo triton] ...

A thin entry point over toolkit.export.run (the library; see its doc for what an export holds).
Export flags given on the command line win; the others come from the run's recorded settings
(run.json), then the defaults. Exit codes: 2 for bad input (one line naming the flag), 4 when the
parity gate fails (the artifacts are kept, marked failed in export.json).
"""

from __future__ import annotations

import dataclasses
import os
import sys

if __name__ == "__main__":  # before TensorFlow is imported: keep its C++ start-up chatter out of the log
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from toolkit.config import ExportConfig  # noqa: E402
# The library's names, importable from here until every caller imports toolkit.export.run.
from toolkit.export.run import ExportError, ParityError, export_model  # noqa: E402,F401

FLAGS_USED = ("model_dir", "export_dir", "data_dir", "opset", "onnx_layout", "parity_images", "parity_atol", "onnx_fp16", "onnx_int8",
              "tflite", "tflite_int8", "triton_repo", "triton_max_batch_size")


def config_from_flags(flag_values, record: dict) -> ExportConfig:
    """The ExportConfig of a command line.

    Args:
      flag_values: parsed absl FlagValues holding the export flags.
      record: the run's run.json (its config.export holds the settings it was trained with).

    Returns:
      An ExportConfig: each field from its flag when given on the command line (or when the run
      recorded none), else the recorded value, else the default.
    """
    recorded = record.get("config", {}).get("export", {}) if isinstance(record, dict) else {}
    values = {}
    for field in dataclasses.fields(ExportConfig):
        flag = flag_values[field.name] if field.name in flag_values else None
        if flag is not None and (flag.present or field.name not in recorded):
            values[field.name] = flag.value
        elif field.name in recorded:
            values[field.name] = recorded[field.name]
    return ExportConfig(**values)


def main(argv):
    """python -m toolkit.export; exit 2 on bad input, 4 when the parity gate fails."""
    from absl import app, flags

    from toolkit.train import checkpoint as ckpt_lib
    from toolkit.common.logs import error, log, quiet_tensorflow_logs

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    quiet_tensorflow_logs(FLAGS["verbosity"].present)
    try:
        try:
            record = ckpt_lib.load_run_record(FLAGS.model_dir)
        except ValueError:
            record = {}  # export_model reports it in one line
        export_model(FLAGS.model_dir, config_from_flags(FLAGS, record), log=log, data_dir=FLAGS.data_dir or None)
    except ExportError as e:
        error(str(e))
        sys.exit(2)
    except ParityError as e:
        error(str(e))
        sys.exit(4)


if __name__ == "__main__":
    from absl import app, flags

    from toolkit import flags as flags_lib

    for name in FLAGS_USED:
        flags.declare_key_flag(name, flags_lib.FLAGS)
    app.run(main)
