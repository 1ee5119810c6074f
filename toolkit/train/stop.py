"""SIGTERM and SIGINT (a scheduler's preemption, Ctrl-C): finish the step, save a checkpoint, stop.

Kubernetes evicting a pod, a spot VM reclaimed, SLURM's preemption: each sends SIGTERM, then
SIGKILL after a grace period. The trainer's handler only records the signal; the loop looks at it
between steps, and when one arrived every worker saves the same checkpoint together (a worker that
got none learns of it through one small all-gather per host call), says so in one line and the
command ends with exit code 8. The same command resumes at that step; with --deterministic the run
ends bit-identical to one never stopped. A second Ctrl-C while the first is being honoured stops at
once, as Python would.
"""

from __future__ import annotations

import signal
import threading
from typing import Optional

from toolkit.common.errors import ExitCode, ToolkitError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(ToolkitError):
    """The run stopped on a signal after saving a checkpoint; the same command resumes it."""

    exit_code = ExitCode.STOPPED


class StopRequest:
    """Records SIGTERM / SIGINT while installed (a context manager; handlers need the main thread)."""

    def __init__(self):
        self.received: Optional[int] = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: the user does not want to wait for the save
        self.received = self.received or signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False

    def agreed(self, runtime) -> Optional[int]:
        """The signal any worker received, the same answer on every worker (None: go on). Every
        worker must call it at the same step: with several workers it is a collective."""
        if runtime.num_workers == 1:
            return self.received
        from toolkit.train import distribute

        return max(distribute.gather_from_workers(runtime.strategy, self.received or 0)) or None


def name(signum: int) -> str:
    return signal.Signals(signum).name
