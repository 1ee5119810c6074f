"""python -m toolkit.export: export a trained run: a float32 SavedModel and ONNX model (and, on request,
float16/int8 ONNX, TFLite, a Triton repository), proven to agree by the parity gate.

  python -m toolkit.export --model_dir RUN [--export_dir DIR] [--onnx_int8] [--tflite] [--triton_repo triton]

Export flags given on the command line win; the others come from the run's recorded settings
(run.json), then the defaults. A failed gate keeps the artifacts, marked failed in export.json.
"""

from __future__ import annotations

import dataclasses

from toolkit import cli, config
from toolkit.config import ExportConfig

SECTIONS = (config.ExportSource, ExportConfig)
OMITTED = ("export",)  # ExportConfig.export means "export after training": not a flag of the export itself


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


def main(argv) -> None:
    del argv
    from absl import flags

    from toolkit import layout
    from toolkit.common.errors import BadInput
    from toolkit.common.logs import log
    from toolkit.export.run import export_model

    source = config.ExportSource(**cli.values_of(config.ExportSource, flags.FLAGS))
    try:
        record = layout.load_run_record(source.model_dir)
    except BadInput:
        record = {}  # export_model reports it in one line
    export_model(source.model_dir, config_from_flags(flags.FLAGS, record), log=log, data_dir=source.data_dir or None)


def run_main() -> None:
    cli.run(__doc__, SECTIONS, main, omit=OMITTED)


if __name__ == "__main__":
    run_main()
