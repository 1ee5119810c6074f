"""TensorFlow's start-up lines, kept out of a healthy run's log.

Importing TensorFlow 2.21 on a CPU machine writes five lines to the process's stderr, twice (two of
its native libraries carry their own copy of absl's logging, each printing "All log messages before
absl::InitializeLog() is called are written to STDERR", the oneDNN notice and the missing CUDA
driver), and the first device query adds `E0000 ... failed call to cuInit` on a machine without a
GPU: an error line on a run with nothing wrong. They are written by C++ before absl's logging is
initialized, so TF_CPP_MIN_LOG_LEVEL does not reach them. The commands capture file descriptor 2
while TensorFlow loads and while it first looks for GPUs, and write back every line that is not one
of these (the start line of every run says what they said: the CPU class, oneDNN on or off, the GPUs).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from typing import Iterator, Sequence

IMPORT_NOISE = (
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"port\.cc:\d+\] oneDNN custom operations are on",
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine",
    r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
    r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags",
)
NO_GPU_NOISE = (r"cuda_platform\.cc:\d+\] failed call to cuInit",)  # dropped only when no GPU was found


@contextlib.contextmanager
def filtered_stderr(drop: Sequence[str]) -> Iterator[list]:
    """Capture the process's stderr (file descriptor 2, C++ writes included) during the block; then
    write back every line that matches none of the regexes in `drop`. Yields the list of the lines
    dropped (filled when the block ends), so a caller may keep some after all."""
    dropped: list = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield dropped
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True):
                if any(re.search(pattern, line) for pattern in drop):
                    dropped.append(line)
                else:
                    sys.stderr.write(line)
            sys.stderr.flush()


class _QuietImport(importlib.abc.MetaPathFinder):
    """Loads `tensorflow`, the first time anything imports it, and looks for GPUs, inside
    filtered_stderr: the start-up lines are dropped, and cuInit's failure when there is no GPU."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; and the real finders below answer
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        real = spec.loader

        class Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return real.create_module(spec)

            def exec_module(self, module):
                with filtered_stderr(IMPORT_NOISE + NO_GPU_NOISE) as dropped:
                    real.exec_module(module)
                    # the first device query (Keras' import makes one): CUDA starts here
                    gpus = module.config.list_physical_devices("GPU")
                if gpus:  # on a GPU machine a CUDA error line matters: keep it
                    sys.stderr.writelines(line for line in dropped if any(re.search(p, line) for p in NO_GPU_NOISE))

        spec.loader = Loader()
        return spec


def quiet_tensorflow_startup() -> None:
    """From now on, the first import of TensorFlow in this process drops its start-up lines."""
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())
