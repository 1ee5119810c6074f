"""The exit codes of every command, and the typed errors that carry them.

Library code raises one of these; `toolkit.cli` turns it into one line on stderr and the error's
exit code, in one place, never by reading the message. Any other exception is a bug: its traceback
is shown and Python exits with 1. No TensorFlow here.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """What a toolkit command's exit status means (README.md, "Troubleshooting", has the same table)."""

    OK = 0
    CRASHED = 1  # a bug (traceback), or a multi-worker cluster that did not form within --cluster_timeout ("Timeout")
    BAD_INPUT = 2  # a bad flag or input: unknown or malformed flags included; the line names the flag
    DIVERGED = 3  # the training loss became NaN or infinite
    PARITY_FAILED = 4  # the exported formats disagree; the artifacts are kept, marked failed in export.json
    WORKER_LOST = 5  # multi-worker: a worker was lost; run the same command on every worker again to resume
    NOTHING_SCORED = 6  # evaluation or batch inference: not one input could be scored (the reasons are in the output)
    DISK_FULL = 7  # no space left where a file was being written: nothing half-written is left; free space, run again
    STOPPED = 8  # SIGTERM or SIGINT (preemption, Ctrl-C): a checkpoint was saved; the same command resumes


def describe_exit_codes() -> str:
    """The exit-code table as lines for a command's --help."""
    words = {
        ExitCode.OK: "done",
        ExitCode.CRASHED: "a bug (traceback), or a cluster that did not form within --cluster_timeout",
        ExitCode.BAD_INPUT: "a bad flag or input (one line naming it)",
        ExitCode.DIVERGED: "training diverged (loss not finite)",
        ExitCode.PARITY_FAILED: "the exported formats disagree (parity gate failed)",
        ExitCode.WORKER_LOST: "multi-worker: a worker was lost (run the same command again on every worker)",
        ExitCode.NOTHING_SCORED: "no input could be scored",
        ExitCode.DISK_FULL: "the disk filled up: nothing half-written is left; free space and run the same command again",
        ExitCode.STOPPED: "stopped by SIGTERM or SIGINT after saving a checkpoint: the same command resumes",
    }
    return "\n".join(f"  {int(code)}  {words[code]}" for code in ExitCode)


class ToolkitError(Exception):
    """An expected failure: its message is one line for the user; `exit_code` is the command's exit status."""

    exit_code = ExitCode.CRASHED


class BadInput(ToolkitError, ValueError):
    """A bad flag, setting or input file; the message starts with the flag it concerns (--name: ...)."""

    exit_code = ExitCode.BAD_INPUT


class Diverged(ToolkitError, RuntimeError):
    """The training loss became NaN or infinite."""

    exit_code = ExitCode.DIVERGED


class ParityFailed(ToolkitError, RuntimeError):
    """The exported formats disagree beyond the limits; `result` holds the export's paths and report."""

    exit_code = ExitCode.PARITY_FAILED

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result or {}


class WorkerLost(ToolkitError, RuntimeError):
    """A worker of a multi-worker job was lost."""

    exit_code = ExitCode.WORKER_LOST


class DiskFull(ToolkitError, OSError):
    """No space left where a file was being written; what was written before is intact."""

    exit_code = ExitCode.DISK_FULL


def disk_full(error: BaseException, what: str = "") -> "DiskFull | None":
    """A DiskFull naming the file for an error that says the disk is full (OSError ENOSPC, or
    TensorFlow's ResourceExhaustedError from a file write); None for any other error."""
    import errno

    message = getattr(error, "message", None) or str(error)
    if not (isinstance(error, OSError) and error.errno == errno.ENOSPC) and "No space left on device" not in message:
        return None
    where = what or getattr(error, "filename", None) or "a file"
    return DiskFull(f"no space left on the disk while writing {where}; free space (the earlier files are intact, the "
                    "half-written ones removed) and run the same command again")


class NothingScored(ToolkitError, RuntimeError):
    """Evaluation or batch inference could score none of its inputs."""

    exit_code = ExitCode.NOTHING_SCORED
