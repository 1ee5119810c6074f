"""toolkit.common.atomic: modes follow the umask, a crash mid-write leaves the old file, directories replace whole."""

import json
import os
import stat

import pytest

from toolkit.common import atomic


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_get_the_umask_mode(tmp_path, umask_022):
    atomic.write_text(str(tmp_path / "a.txt"), "é\n")
    atomic.write_json(str(tmp_path / "b.json"), {"x": [1, 2]})
    atomic.write_bytes(str(tmp_path / "c.bin"), b"\0\1")
    atomic.write_with(str(tmp_path / "d.dat"), lambda tmp: open(tmp, "w").write("d"))
    with atomic.AtomicFile(str(tmp_path / "e.csv"), newline="") as f:
        f.write("a,b\r\n")
    for name in ("a.txt", "b.json", "c.bin", "d.dat", "e.csv"):
        assert mode(tmp_path / name) == 0o644, name
    assert (tmp_path / "a.txt").read_bytes() == "é\n".encode()
    assert (tmp_path / "b.json").read_text() == '{\n  "x": [\n    1,\n    2\n  ]\n}\n'
    assert (tmp_path / "c.bin").read_bytes() == b"\0\1"
    assert (tmp_path / "e.csv").read_bytes() == b"a,b\r\n"
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.json", "c.bin", "d.dat", "e.csv"]


def test_umask_077_is_honoured_too(tmp_path):
    previous = os.umask(0o077)
    try:
        atomic.write_text(str(tmp_path / "private"), "x")
        with atomic.directory(str(tmp_path / "dir")):
            pass
    finally:
        os.umask(previous)
    assert mode(tmp_path / "private") == 0o600 and mode(tmp_path / "dir") == 0o700


def test_a_crash_mid_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.AtomicFile(str(path)) as f:
            f.write("half of the new")
            raise RuntimeError("crash")

    def crash(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        atomic.write_with(str(path), crash)
    with pytest.raises(TypeError):  # not serializable: fails before anything replaces the file
        atomic.write_json(str(path), {"x": object()})
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["run.json"]


def test_streamed_file_appears_only_on_commit(tmp_path):
    path = tmp_path / "predictions.jsonl"
    pending = atomic.AtomicFile(str(path))
    pending.file.write(json.dumps({"a": 1}) + "\n")
    assert not path.exists()
    pending.commit()
    assert path.read_text() == '{"a": 1}\n'
    aborted = atomic.AtomicFile(str(path))
    aborted.file.write("garbage")
    aborted.abort()
    assert path.read_text() == '{"a": 1}\n' and os.listdir(tmp_path) == ["predictions.jsonl"]


def test_write_with_keeps_the_extension_for_tools_that_check_it(tmp_path):
    seen = []
    atomic.write_with(str(tmp_path / "model.weights.h5"), lambda tmp: (seen.append(tmp), open(tmp, "w").close()))
    assert seen[0].endswith("model.weights.h5") and os.path.basename(seen[0]).startswith(".tmp-")


def test_directory_is_built_aside_and_replaces_the_old_one(tmp_path, umask_022):
    target = tmp_path / "sub" / "export"
    with atomic.directory(str(target)) as tmp:
        assert not target.exists()
        with open(os.path.join(tmp, "one"), "w") as f:
            f.write("1")
    assert os.listdir(target) == ["one"] and mode(target) == 0o755
    with atomic.directory(str(target)) as tmp:
        with open(os.path.join(tmp, "two"), "w") as f:
            f.write("2")
        assert os.listdir(target) == ["one"]  # the old one is whole until the block ends
    assert os.listdir(target) == ["two"]
    assert os.listdir(tmp_path / "sub") == ["export"]  # no .tmp- or .old- leftovers


def test_directory_crash_leaves_the_old_one(tmp_path):
    target = tmp_path / "shards"
    target.mkdir()
    (target / "keep").write_text("k")
    with pytest.raises(KeyboardInterrupt):
        with atomic.directory(str(target)) as tmp:
            with open(os.path.join(tmp, "new"), "w") as f:
                f.write("n")
            raise KeyboardInterrupt
    assert os.listdir(target) == ["keep"] and os.listdir(tmp_path) == ["shards"]
