"""python -m toolkit.train: train a ResNetV2 classifier (see --helpfull, or README.md).

A thin entry point: flags become a frozen Config once, the library does the rest. Expected
failures (a bad flag, bad data, a diverged loss) end with one line on stderr and exit code 2
(a bad flag or input, the message names the flag), 3 (training diverged) or 4 (the
exported formats disagree: the export's parity gate failed).
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
    from toolkit import training
    from toolkit.logs import error

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
        from toolkit.export import ParityError

        if not isinstance(e, ParityError):
            raise
        error(f"export parity gate failed: {str(e).splitlines()[0]} (artifacts kept, marked failed in export.json)")
        sys.exit(4)


def run_main():
    app.run(main)


if __name__ == "__main__":
    run_main()
