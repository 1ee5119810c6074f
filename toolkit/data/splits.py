"""The split names: which folder, shard prefix or TFDS split counts as training or validation data.

One table for every reader (image folders, shard directories, TFDS, evaluation), so a name means
the same split everywhere. No TensorFlow import: the command lines check their input first.
"""

# split -> the names that stand for it, the preferred first (a directory with both val/ and
# test/ validates on val/)
SPLITS = {"train": ("train",), "val": ("val", "validation", "test")}
ALL_NAMES = tuple(name for names in SPLITS.values() for name in names)


def canonical(name: str) -> str:
    """"train" or "val" for any of their names; an unknown name is returned as it is."""
    return next((split for split, names in SPLITS.items() if name in names), name)
