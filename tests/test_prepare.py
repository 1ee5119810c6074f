"""toolkit.data.prepare: --data_dir as shards or as an image folder, converted once and reused."""

import json
import os

import data_helpers as dh
import pytest

from toolkit.data import folder, prepare, shards


def convert_into(src, work, lines):
    return prepare.shards_for(str(src), str(work), lines.append, workers=1)


def test_shards_are_used_where_they_are(tmp_path):
    dh.write_folder(str(tmp_path / "photos"), {"a": 3, "b": 3})
    folder.convert_folder(str(tmp_path / "photos"), str(tmp_path / "shards"), workers=1, progress=False)
    lines = []
    assert prepare.shards_for(str(tmp_path / "shards"), str(tmp_path / "work"), lines.append) == str(tmp_path / "shards")
    assert lines == [] and not (tmp_path / "work").exists()


def test_an_image_folder_is_converted_once_and_reconverted_when_it_changes(tmp_path):
    src, work = tmp_path / "photos", tmp_path / "run" / "data"
    dh.write_folder(str(src), None, split_dirs={"train": {"a": 4, "b": 4}, "test": {"a": 1, "b": 2}})
    lines = []
    assert convert_into(src, work, lines) == str(work)
    assert lines[0] == f"--data_dir: {src} is an image folder; converting it into {work}"
    assert any(line.startswith("converted 11 images from") for line in lines)  # the converter's report
    info = shards.read_dataset_info(str(work))
    assert info.counts["test"] == 3 and info.counts["train"] + info.counts["val"] == 8
    first = json.load(open(work / shards.MANIFEST))
    assert first[prepare.DIGEST_KEY] == prepare.folder_digest(str(src))

    lines.clear()  # unchanged: reused, not rewritten
    shard = info.split_files("train")[0]
    before = os.stat(shard).st_mtime_ns
    assert convert_into(src, work, lines) == str(work)
    assert lines == [f"--data_dir: {src} is unchanged since its conversion into {work}; reusing it"]
    assert os.stat(shard).st_mtime_ns == before

    lines.clear()  # one more photo: converted again, and the new photo is in the shards
    dh.write_folder(str(tmp_path / "more"), {"b": 1}, seed=99)
    os.replace(tmp_path / "more" / "b" / "img_000.jpg", src / "train" / "b" / "new.jpg")
    convert_into(src, work, lines)
    assert "converting it" in lines[0]
    info = shards.read_dataset_info(str(work))
    assert info.counts["train"] + info.counts["val"] == 9
    names = {r["filename"] for split in ("train", "val") for r in dh.read_records(str(work), split)}
    assert os.path.join("train", "b", "new.jpg") in names

    lines.clear()  # another max_side: the shards would differ, so converted again
    prepare.shards_for(str(src), str(work), lines.append, max_side=16, workers=1)
    assert "converting it" in lines[0] and json.load(open(work / shards.MANIFEST))["options"]["max_side"] == 16


def test_digest_follows_names_sizes_and_times_not_hidden_files(tmp_path):
    dh.write_folder(str(tmp_path / "p"), {"a": 2})
    digest = prepare.folder_digest(str(tmp_path / "p"))
    (tmp_path / "p" / ".DS_Store").write_bytes(b"x")
    assert prepare.folder_digest(str(tmp_path / "p")) == digest
    path = tmp_path / "p" / "a" / "img_000.jpg"
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 1))
    assert prepare.folder_digest(str(tmp_path / "p")) != digest


def test_errors_name_the_trainers_flags(tmp_path):
    with pytest.raises(prepare.PrepareError, match="--data_dir: .* is not a directory"):
        prepare.shards_for(str(tmp_path / "missing"), str(tmp_path / "work"), print)
    (tmp_path / "empty").mkdir()
    with pytest.raises(prepare.PrepareError, match="--data_dir: .* has no class folders"):
        prepare.shards_for(str(tmp_path / "empty"), str(tmp_path / "work"), print)
    dh.write_folder(str(tmp_path / "photos"), {"a": 2, "b": 2})
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text("mine")  # never replaced: not an earlier conversion
    with pytest.raises(prepare.PrepareError, match="--model_dir: cannot convert into .* not a shard directory"):
        prepare.shards_for(str(tmp_path / "photos"), str(tmp_path / "work"), print, workers=1)
    assert (tmp_path / "work" / "notes.txt").read_text() == "mine"
