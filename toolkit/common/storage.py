"""Paths on any filesystem TensorFlow's tf.io.gfile knows (gs://, ram://, ...) beside local ones.

A local path (no `scheme://`) goes through os, shutil and open() exactly as before, and TensorFlow
is not imported for it. Any other path goes through tf.io.gfile (TensorFlow imported on first use);
its errors other than "not found" become one line naming the path (StorageError, exit code 2).

Which filesystems the writer (toolkit.common.atomic) renames on, and which it writes then verifies
(`can_rename`), was decided by trying each in TensorFlow 2.21:
  ram://  renames: a file's rename moves its entry under the filesystem's lock, so the new name
          appears whole. It cannot rename a directory (only the directory's own entry moves; its
          files stay under the old name), and its stat is a prefix match ("ram://a/b" exists when
          "ram://a/bc" does): directories are copied file by file, never renamed. Writing to an
          existing name appends to it: the writer never writes over a name there, it renames over it.
  gs://   written then verified: Cloud Storage has no rename (TensorFlow copies every byte of the
          object server-side, then deletes the old one), while an upload is already all-or-nothing
          there (an object appears only once its upload completes). So a file is uploaded once to
          its final name, from a local spool (an exception while writing never reaches the bucket),
          then read back and compared (length and sha256).
  others  tried once per scheme: a hidden probe file renamed beside the first path written.
TensorFlow's own writers (checkpoints, TensorBoard summaries, a SavedModel read in place) reach these
filesystems by themselves; a checkpoint's temporary files are renamed by TensorFlow (on gs:// a copy
and a delete of each), its index last, as on a local disk.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
import re
import secrets
import shutil
from typing import Iterator

from toolkit.common.errors import BadInput
from toolkit.common.scratch import staging

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
RENAMES = {"ram": True, "gs": False}  # scheme -> the writer renames (True) or writes and verifies (False)
CHUNK = 1 << 22


class StorageError(BadInput):
    """A path on a remote filesystem cannot be used (unknown scheme, no access, no network): one line naming it."""


def scheme(path: str) -> str:
    """"gs", "ram", ... of a URL; "" for a local path."""
    match = _SCHEME.match(str(path))
    return match.group(1).lower() if match else ""


def is_local(path: str) -> bool:
    return not scheme(path)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


@contextlib.contextmanager
def _named(path: str, flag: str = "") -> Iterator[None]:
    """TensorFlow's filesystem errors (but "not found") as one line naming the path (and the flag)."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.NotFoundError:
        raise
    except tf.errors.OpError as e:
        reason = (e.message or type(e).__name__).splitlines()[0]
        raise StorageError(f"{f'--{flag}: ' if flag else ''}{path}: {reason}") from e


def absolute(path: str) -> str:
    """os.path.abspath for a local path; a URL as it is (without a trailing slash)."""
    return os.path.abspath(path) if is_local(path) else path.rstrip("/")


def parent(path: str) -> str:
    """The directory holding `path` (absolute for a local path)."""
    if is_local(path):
        return os.path.dirname(os.path.abspath(path))
    head = path.rstrip("/").rsplit("/", 1)[0]
    return head if len(head) > len(scheme(path)) + 3 else path


def exists(path: str, flag: str = "") -> bool:
    """os.path.exists; on another filesystem a failure to ask (no access, no network) is a StorageError
    naming the path, and `flag` when given."""
    if is_local(path):
        return os.path.exists(path)
    with _named(path, flag):
        return _gfile().exists(path)


def isdir(path: str, flag: str = "") -> bool:
    if is_local(path):
        return os.path.isdir(path)
    with _named(path, flag):
        return _gfile().isdir(path)


def isfile(path: str) -> bool:
    if is_local(path):
        return os.path.isfile(path)
    return exists(path) and not isdir(path)


def makedirs(path: str, flag: str = "") -> None:
    """Create `path` and its parents (no error when it exists); `flag` names it in a remote failure."""
    if is_local(path):
        os.makedirs(path, exist_ok=True)
        return
    with _named(f"cannot create {path}" if flag else path, flag):
        _gfile().makedirs(path)


def listdir(path: str) -> list:
    """The names in a directory (a remote one's without their trailing slashes)."""
    if is_local(path):
        return os.listdir(path)
    with _named(path):
        names = [name.rstrip("/") for name in _gfile().listdir(path)]
    if scheme(path) == "ram":  # its listing matches a prefix: "ram://a/b" also lists ".x" for "ram://a/b.x/..."
        names = [n for n in names if exists(f"{path.rstrip('/')}/{n}")]
    return names


def glob(pattern: str) -> list:
    if is_local(pattern):
        import glob as globbing

        return globbing.glob(pattern)
    with _named(pattern):
        return _gfile().glob(pattern)


def walk(root: str):
    """(directory, subdirectories, files) top-down, as os.walk (prune the subdirectories in place)."""
    if is_local(root):
        return os.walk(root)
    return _walk(root.rstrip("/"))


def _walk(root: str):
    names = listdir(root)
    dirs = [n for n in names if isdir(f"{root}/{n}")]
    yield root, dirs, [n for n in names if n not in dirs]
    for name in dirs:
        yield from _walk(f"{root}/{name}")


def size(path: str) -> int:
    if is_local(path):
        return os.path.getsize(path)
    with _named(path):
        return _gfile().stat(path).length


def mtime(path: str) -> float:
    if is_local(path):
        return os.path.getmtime(path)
    with _named(path):
        return _gfile().stat(path).mtime_nsec / 1e9


def open(path: str, mode: str = "r"):  # noqa: A001 - the builtin's name, on purpose
    if is_local(path):
        return builtins.open(path, mode)
    return _gfile().GFile(path, mode)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def remove(path: str) -> None:
    """Delete a file; nothing when it is missing."""
    if is_local(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    import tensorflow as tf

    with contextlib.suppress(tf.errors.NotFoundError), _named(path):
        _gfile().remove(path)


def rmtree(path: str) -> None:
    """Delete a directory and everything below it; nothing when it is missing."""
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    import tensorflow as tf

    with contextlib.suppress(tf.errors.NotFoundError), _named(path):
        if _gfile().isdir(path):
            _gfile().rmtree(path)


def copy_file(src: str, dst: str) -> None:
    """Copy one file, either side on any filesystem, replacing `dst`."""
    if is_local(src) and is_local(dst):
        shutil.copyfile(src, dst)
        return
    with _named(dst if is_local(src) else src):
        _gfile().copy(src, dst, overwrite=True)


def copy_tree(src: str, dst: str) -> None:
    """Copy a directory file by file (empty folders too), either side on any filesystem."""
    src = absolute(src)
    for directory, _, files in walk(src):
        target = dst + directory[len(src):] if not is_local(dst) else os.path.join(dst, os.path.relpath(directory, src))
        makedirs(target)
        for name in files:
            copy_file(os.path.join(directory, name), os.path.join(target, name))


def move(src: str, dst: str) -> None:
    """Move a file or a directory. A local one is renamed; a remote file is renamed by gfile (on gs://
    a copy and a delete); a remote directory is copied file by file, then deleted (neither ram:// nor
    Cloud Storage renames a directory): a crash midway leaves both copies, never neither."""
    if is_local(src) and is_local(dst):
        os.replace(src, dst)
        return
    if isdir(src):
        copy_tree(src, dst)
        rmtree(src)
        return
    makedirs(parent(dst))
    with _named(src):
        _gfile().rename(src, dst, overwrite=True)


def digest(path: str) -> tuple:
    """(length, sha256 hex) of a file's bytes, read in chunks."""
    total, hashed = 0, hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            total += len(block)
            hashed.update(block)
    return total, hashed.hexdigest()


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local path holding what `path` holds: `path` itself when it is local, else a copy (a file
    keeps its name, for the tools that insist on an extension; a directory is copied whole) in a
    scratch directory removed when the block ends. For the readers that need a local file:
    onnxruntime, Keras' weights loader, the LiteRT converter."""
    if is_local(path):
        yield path
        return
    with staging() as scratch:
        local = os.path.join(scratch, os.path.basename(path.rstrip("/")) or "copy")
        if isdir(path):
            copy_tree(path, local)
        else:
            copy_file(path, local)
        yield local


def can_rename(path: str) -> bool:
    """Whether the writer renames files on `path`'s filesystem (atomic) or writes then verifies."""
    kind = scheme(path)
    if not kind:
        return True
    if kind not in RENAMES:
        RENAMES[kind] = _rename_works(parent(path))
    return RENAMES[kind]


def _rename_works(directory: str) -> bool:
    """Try a rename on this filesystem: a hidden probe file renamed, then removed."""
    import tensorflow as tf

    probe = f"{directory.rstrip('/')}/.rename-probe-{secrets.token_hex(4)}"
    before, after = probe + "-a", probe + "-b"  # neither a prefix of the other (ram:// stats by prefix)
    try:
        with _gfile().GFile(before, "wb") as f:
            f.write(b"probe")
        _gfile().rename(before, after, overwrite=True)
        works = _gfile().exists(after) and not _gfile().exists(before)
    except tf.errors.OpError:
        works = False
    for leftover in (before, after):
        with contextlib.suppress(tf.errors.OpError):
            _gfile().remove(leftover)
    return works
