"""Keras' published ImageNet weights for ResNet{50,101,152}V2, fetched and cached the Keras way.

The files are the ones `keras.applications.ResNet50V2(weights="imagenet", include_top=False)`
loads: the same names, origins and md5 hashes (keras/src/applications/resnet.py), downloaded by
`keras.utils.get_file` into the same cache ($KERAS_HOME/models, else ~/.keras/models), so a file
Keras already downloaded is reused and one we download serves Keras too. The "notop" variant is
used because every run brings its own head; the head of our model keeps its fresh initialization.

Offline, the cached file is used; without one, the error is ONE line naming the file, where to put
it and where to get it. A cached file whose hash differs is refused (named, never deleted: get_file
would delete it when the re-download fails, and it may be the user's only copy).
"""

from __future__ import annotations

import hashlib
import os

import keras

from toolkit.common.errors import BadInput

# Keras' published origin and the md5 of each notop file (keras.applications' WEIGHTS_HASHES[...][1])
BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
NOTOP_MD5 = {
    50: "fac2f116257151a9d068a22e544a4917",
    101: "c0ed64b8031c3730f411d2eb4eea35b5",
    152: "ed17cf2e0169df9d443503ef94b23b33",
}
APPLICATIONS = {50: "ResNet50V2", 101: "ResNet101V2", 152: "ResNet152V2"}


class WeightsUnavailable(BadInput):
    """The ImageNet weights can be neither found in the cache nor downloaded; one line."""


def file_name(depth: int) -> str:
    """The published name of the notop weights of ResNet{depth}V2."""
    return f"resnet{depth}v2_weights_tf_dim_ordering_tf_kernels_notop.h5"


def cache_dir() -> str:
    """Keras' cache root: $KERAS_HOME, else ~/.keras (read now, not at Keras' import, so it can be set late)."""
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def md5_of(path: str) -> str:
    """The md5 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def imagenet_weights_path(depth: int) -> str:
    """The local path of the notop ImageNet weights of ResNet{depth}V2, downloaded once if needed.

    Raises WeightsUnavailable (one line) when the depth has no published weights, the cached file's
    hash differs from the published one, or the download fails (offline: says where to put it).
    """
    if depth not in NOTOP_MD5:
        raise WeightsUnavailable(f"no published ImageNet weights for depth {depth} (only {sorted(NOTOP_MD5)})")
    name, expected = file_name(depth), NOTOP_MD5[depth]
    origin = BASE_URL + name
    cached = os.path.join(cache_dir(), "models", name)
    if os.path.isfile(cached):  # hashed once here; keras.utils.get_file would hash it again
        if md5_of(cached) != expected:
            raise WeightsUnavailable(f"{cached} is not the published file (md5 {expected}); delete it or replace it "
                                     f"with {origin}")
        return cached
    try:
        return keras.utils.get_file(name, origin, cache_subdir="models", file_hash=expected, cache_dir=cache_dir())
    except Exception as e:  # noqa: BLE001 - URL errors, hash errors: all say the same to the user
        reason = " ".join(str(e).split())[:200]
        raise WeightsUnavailable(f"cannot download {origin} ({reason}); offline, put that file at {cached}") from None


def imagenet_backbone(depth: int) -> keras.Model:
    """keras.applications' ResNet{depth}V2 without its top, holding the published ImageNet weights.

    Keras' own loader reads the file (the legacy h5 layout matched layer by layer), so the layer
    names and weight order are Keras', which toolkit.models.resnet_v2 shares.
    """
    path = imagenet_weights_path(depth)
    build = getattr(keras.applications, APPLICATIONS[depth])
    try:
        return build(include_top=False, weights=path, input_shape=(None, None, 3))
    except Exception as e:  # noqa: BLE001 - a truncated or foreign h5 file
        raise WeightsUnavailable(f"cannot load {path}: {' '.join(str(e).split())[:200]}") from None
