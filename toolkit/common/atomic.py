"""Atomic writes: a file or a directory is written under a temporary name beside its final path
and renamed over it, so a reader sees the old version or the new one, never half of one.

Every file the toolkit leaves behind (run.json, summaries, reports, prediction files, exports,
shards, manifests) is written through here. Temporary names start with ".tmp-" (hidden, and never
matched by a shard glob such as `train-*`); the final name is their suffix, so a tool that insists
on an extension (Keras' `.weights.h5`) accepts them. Files and directories get the usual mode of
the process umask (0644 / 0755 under umask 022), never mkstemp's 0600.

A path on another filesystem (gs://, ram://: toolkit.common.storage) is written from a local
spool in a scratch directory (toolkit.common.scratch.staging), so an exception while writing
never reaches it and the tools that need a local file (Keras, matplotlib, onnx) write as usual.
At commit the file goes up (`upload`): where the filesystem renames (ram://), to a hidden
temporary name beside the target, then renamed over it; where it does not (gs://), to the final
name at once, then read back and compared, length and sha256 (NotVerified names the path on a
mismatch). A directory (`directory`: an export, a converted dataset) is built in local scratch
and copied up file by file, its record file (`last`: export.json, manifest.json) last and the old
one's removed first, since neither filesystem renames a directory: a directory without its record
is an incomplete one.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from typing import Callable, Iterator, TypeVar

from toolkit.common import storage
from toolkit.common.errors import DiskFull, ToolkitError, disk_full
from toolkit.common.scratch import staging

T = TypeVar("T")


class NotVerified(ToolkitError, OSError):
    """A file written to a filesystem without rename read back other than it was written."""


def temporary_path(path: str, kind: str = "tmp") -> str:
    """A fresh hidden name beside `path`: DIR/.{kind}-{random}-{basename}."""
    if not storage.is_local(path):
        return f"{storage.parent(path)}/.{kind}-{secrets.token_hex(4)}-{path.rstrip('/').rsplit('/', 1)[-1]}"
    directory, base = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{kind}-{secrets.token_hex(4)}-{base}")


class AtomicFile:
    """An open file under a temporary name; commit() renames it to `path`, abort() removes it.

    Usable as a context manager (`with AtomicFile(path) as f:`): it commits when the block ends
    normally and aborts on an exception. For a file written over time (prediction files), keep the
    object and call commit() or abort().

    Args:
      path: the final path; its directory must exist (on another filesystem it is created).
      mode: "w" (text) or "wb" (bytes).
      newline: as for `open` (text mode only).
    """

    def __init__(self, path: str, mode: str = "w", newline: str | None = None):
        if mode not in ("w", "wb"):
            raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
        self.path = path
        self._spool = None  # a remote path's local spool directory (a staging context)
        if storage.is_local(path):
            self.tmp = temporary_path(path)
        else:
            self._spool = staging()
            self.tmp = os.path.join(self._spool.__enter__(), os.path.basename(path.rstrip("/")))
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        self.file = os.fdopen(fd, mode, newline=newline) if mode == "w" else os.fdopen(fd, mode)

    def commit(self) -> None:
        """Flush the data to disk and rename the file into place."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            if self._spool is None:
                os.replace(self.tmp, self.path)
            else:
                upload(self.tmp, self.path)
                self.abort()  # the spool's work is done
        except BaseException as e:
            self.abort()
            _raise_disk_full(e, self.path)
            raise

    def abort(self) -> None:
        """Close and remove the temporary file; `path` keeps what it held before."""
        with contextlib.suppress(OSError):  # a full disk fails the close's flush: the file goes all the same
            self.file.close()
        storage.remove(self.tmp)
        if self._spool is not None:
            spool, self._spool = self._spool, None
            spool.__exit__(None, None, None)

    def __enter__(self):
        return self.file

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.commit()
        else:
            self.abort()
            _raise_disk_full(value, self.path)
        return False


def write_bytes(path: str, data: bytes) -> None:
    """Replace the file at `path` with `data`."""
    with AtomicFile(path, "wb") as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    """Replace the file at `path` with `text` (UTF-8)."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj) -> None:
    """Replace the file at `path` with `obj` as indented JSON and a final newline."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_with(path: str, write: Callable[[str], T]) -> T:
    """Replace the file at `path` with what `write(temporary_path)` writes there.

    For files another library writes by name (Keras weights, ONNX models, PNG figures, TFRecord
    shards). Returns what `write` returns; if it raises, the temporary file is removed and `path`
    is untouched. On another filesystem `write` writes a local file, which is uploaded.
    """
    with contextlib.ExitStack() as cleanup:
        if storage.is_local(path):  # beside the target, renamed over it
            tmp, finish = temporary_path(path), publish
            cleanup.callback(storage.remove, tmp)  # nothing once renamed
        else:  # in local scratch, uploaded
            tmp, finish = os.path.join(cleanup.enter_context(staging()), os.path.basename(path.rstrip("/"))), upload
        try:
            result = write(tmp)
            finish(tmp, path)
            return result
        except Exception as e:
            _raise_disk_full(e, path)
            raise


def publish(tmp: str, path: str) -> None:
    """Flush a file written under a temporary name (beside `path`) to disk and rename it to `path`."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def upload(local: str, path: str) -> None:
    """Put the local file `local` at `path` on another filesystem: renamed into place from a hidden
    temporary name where the filesystem renames, else written to `path` and read back.

    Raises:
      NotVerified: what was read back differs from what was written (one line naming the path).
    """
    storage.makedirs(storage.parent(path))
    if storage.can_rename(path):
        tmp = temporary_path(path)
        try:
            storage.copy_file(local, tmp)
            storage.move(tmp, path)
        except BaseException:
            storage.remove(tmp)
            raise
        return
    storage.copy_file(local, path)
    verify(local, path)


def verify(local: str, path: str) -> None:
    """NotVerified unless the file at `path` holds the bytes of the local file `local`."""
    (wrote, sent), (found, read) = storage.digest(local), storage.digest(path)
    if (wrote, sent) != (found, read):
        what = f"{found} bytes" if found != wrote else "other bytes (sha256 differs)"
        raise NotVerified(f"{path}: {wrote} bytes were written but {what} were read back; the copy on "
                          f"{storage.scheme(path)}:// is not what was written; run the same command again")


@contextlib.contextmanager
def directory(path: str, last: str | None = None) -> Iterator[str]:
    """Build a directory under a temporary name and rename it to `path` when the block ends.

    Yields the temporary directory (beside `path`, whose parent is created if needed). When the
    block ends normally an earlier directory at `path` is replaced (moved aside, then deleted);
    on an exception the temporary directory is deleted and `path` is untouched. On another
    filesystem the temporary directory is local scratch, copied up by `publish_directory` (`last`:
    the record file that marks the directory complete).
    """
    if not storage.is_local(path):
        with staging() as scratch:
            built = os.path.join(scratch, os.path.basename(path.rstrip("/")))
            os.mkdir(built)
            yield built
            publish_directory(built, path, last)
        return
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = temporary_path(path)
    os.mkdir(tmp)  # mode 0777 less the umask (mkdtemp would make it 0700)
    try:
        yield tmp
        _replace_directory(tmp, path)
    except Exception as e:
        _raise_disk_full(e, path)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_directory(local: str, path: str, last: str | None = None) -> None:
    """Replace the directory `path` on another filesystem with a copy of the local directory `local`.

    The old directory's `last` file goes first and the new one's last, so a reader (and the next
    run) can tell a complete directory from one a crash interrupted; every file goes through `upload`.
    """
    if storage.exists(path):
        if last:
            storage.remove(f"{path.rstrip('/')}/{last}")
        storage.rmtree(path)
    files = []
    for folder, _, names in os.walk(local):
        relative = os.path.relpath(folder, local)
        target = path.rstrip("/") if relative == "." else f"{path.rstrip('/')}/{relative.replace(os.sep, '/')}"
        storage.makedirs(target)
        files += [(os.path.join(folder, n), f"{target}/{n}") for n in sorted(names)]
    final = f"{path.rstrip('/')}/{last}" if last else None
    for source, target in sorted(files, key=lambda pair: pair[1] == final):
        upload(source, target)


def _raise_disk_full(error: BaseException, path: str) -> None:
    """A full disk while writing `path` (its temporary name already removed): DiskFull naming it."""
    if isinstance(error, DiskFull):
        return
    full = disk_full(error, path)
    if full is not None:
        raise full from error


def _replace_directory(tmp: str, path: str) -> None:
    if not os.path.isdir(path):
        os.replace(tmp, path)
        return
    old = temporary_path(path, "old")
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)
