"""The split names: which folder, shard prefix or TFDS split counts as training, validation or test data.

One table for every reader (image folders, shard directories, TFDS, evaluation), so a name means
the same split everywhere. No TensorFlow import: the command lines check their input first.

test is never a stand-in for val: the trainer selects its best epoch on val and must not see test
until the end (issue 14). A source with train and test but no val gets a val split drawn from train.
"""

# split -> the names that stand for it, the preferred first
SPLITS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}
ALL_NAMES = tuple(name for names in SPLITS.values() for name in names)


def canonical(name: str) -> str:
    """"train", "val" or "test" for any of their names; an unknown name is returned as it is."""
    return next((split for split, names in SPLITS.items() if name in names), name)
