"""Per-process scratch directories, removed when the process exits, even after a SIGKILL of an
earlier process of the same kind: where a non-chief worker writes what only the chief keeps (its
checkpoint saves, its copy of converted or generated data), and where what goes to or comes from
object storage is staged (`staging`). Always local. No TensorFlow here."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile


def make_scratch_dir(prefix: str) -> str:
    """A new temporary directory `<prefix><pid>-XXXX`, removed when this process exits.

    A process killed with SIGKILL never runs its exit handlers, so first remove the directories
    of this prefix whose process is gone: a worker killed and started again leaves nothing behind.
    """
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    path = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=root)
    if not _SCRATCH:
        atexit.register(remove_scratch_dirs)
    _SCRATCH.append(path)
    return path


_SCRATCH = []  # this process's scratch directories


def remove_scratch_dirs() -> None:
    """Remove this process's scratch directories now (before an os._exit, which runs no exit handlers)."""
    while _SCRATCH:
        shutil.rmtree(_SCRATCH.pop(), ignore_errors=True)


@contextlib.contextmanager
def staging():
    """A scratch directory for the local copy of something that lives on another filesystem (a file
    read from gs://, a directory built here and copied up), removed when the block ends (and, after a
    SIGKILL, by the next process that makes one)."""
    path = make_scratch_dir("toolkit-stage-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if path in _SCRATCH:
            _SCRATCH.remove(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def exit_now(code: int) -> None:
    """End the process at once, this process's scratch directories removed, output flushed.

    After a lost worker, a normal exit waits in TensorFlow's shutdown for the coordination
    service's barrier with the dead task (tens of seconds), and there is nothing left to save.
    """
    remove_scratch_dirs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
