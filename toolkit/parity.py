"""python -m toolkit.parity: run the parity gate again on an existing export.

  python -m toolkit.parity --export_dir DIR [--model_dir RUN] [--data_dir DATA] [--parity_images N]

After copying an export, or touching it: compares the Keras model, the SavedModel and the ONNX
(and TFLite) models again on the validation images and on random ones, and brings the export's
parity.json, export.json and model card up to date.
"""

from __future__ import annotations

from toolkit import cli, config

SECTIONS = (config.ParityConfig,)


def main(argv) -> None:
    del argv
    from absl import flags

    from toolkit.common.errors import ParityFailed
    from toolkit.common.logs import log
    from toolkit.export.verify import verify_export

    c = config.ParityConfig(**cli.values_of(config.ParityConfig, flags.FLAGS))
    result = verify_export(c.export_dir, model_dir=c.model_dir or None, parity_images=c.parity_images, atol=c.parity_atol,
                           data_dir=c.data_dir or None, log=log)
    if not result["passed"]:
        raise ParityFailed(f"parity gate FAILED for {c.export_dir}: " + "; ".join(result["failures"]), result)


def run_main() -> None:
    cli.run(__doc__, SECTIONS, main)


if __name__ == "__main__":
    run_main()
