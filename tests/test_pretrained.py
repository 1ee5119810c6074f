"""--init_weights imagenet: Keras' published files, found in Keras' cache by keras.utils.get_file.

No network: a weights file in the published notop layout (Keras' legacy h5: layer_names, then one
group per layer with weight_names), written by data_helpers with h5py from a randomized
keras.applications.ResNet50V2(weights=None, include_top=False), is placed in a temporary
KERAS_HOME under the published name. Its md5 is not the published one, so the test puts the file's
own md5 in the expected-hash table (monkeypatch): get_file then runs its real cache path, hash
check included, and Keras' own loader reads the file.
"""

import os

import numpy as np
import pytest

from data_helpers import write_notop_file
from toolkit.config import ConfigError
from toolkit.models import pretrained, resnet_v2


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    home = tmp_path_factory.mktemp("keras_home")
    os.makedirs(home / "models")
    path = home / "models" / pretrained.file_name(50)
    expected = write_notop_file(str(path))
    return home, str(path), expected, pretrained.md5_of(str(path))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No download can succeed (and none reaches the network): the origin is a missing local file."""
    monkeypatch.setattr(pretrained, "BASE_URL", (tmp_path / "nowhere").as_uri() + "/")


def test_names_origins_and_hashes_are_keras_applications_own():
    from keras.src.applications import resnet

    assert pretrained.BASE_URL == resnet.BASE_WEIGHTS_PATH
    for depth in (50, 101, 152):
        assert pretrained.NOTOP_MD5[depth] == resnet.WEIGHTS_HASHES[f"resnet{depth}v2"][1]
        assert pretrained.file_name(depth) == f"resnet{depth}v2_weights_tf_dim_ordering_tf_kernels_notop.h5"


def test_cached_file_lands_in_every_layer_and_the_head_stays_fresh(cache, offline, monkeypatch):
    home, path, expected, md5 = cache
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setitem(pretrained.NOTOP_MD5, 50, md5)
    model = resnet_v2.build_model(3, 32)
    head = model.get_layer("predictions").get_weights()
    copied = resnet_v2.load_initial_weights(model, "imagenet")
    assert copied == len(expected) == sum(1 for layer in model.layers if layer.weights) - 1  # all but the head
    for name, arrays in expected.items():
        for got, want in zip(model.get_layer(name).get_weights(), arrays, strict=True):
            np.testing.assert_array_equal(got, want)
    for got, want in zip(model.get_layer("predictions").get_weights(), head):
        np.testing.assert_array_equal(got, want)
    assert os.path.getsize(path) > 90e6  # still there, untouched


def test_offline_without_the_file_says_where_to_put_it_in_one_line(tmp_path, offline, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_home"))
    with pytest.raises(ConfigError) as raised:
        resnet_v2.load_initial_weights(resnet_v2.build_model(3, 32, depth=101), "imagenet")
    message = str(raised.value)
    where = os.path.join(str(tmp_path / "empty_home"), "models", pretrained.file_name(101))
    assert message.startswith("--init_weights: cannot download ") and message.endswith(f"offline, put that file at {where}")
    assert pretrained.file_name(101) in message.split(";")[0] and "\n" not in message


def test_depth26_has_no_imagenet_weights_and_says_so_in_one_line(tmp_path, offline, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(ConfigError) as raised:
        resnet_v2.load_initial_weights(resnet_v2.build_model(3, 32, depth=26), "imagenet")
    assert str(raised.value) == "--init_weights: no published ImageNet weights for depth 26 (only [50, 101, 152])"
    assert not (tmp_path / "models").exists()  # nothing was fetched or written


def test_a_cached_file_with_another_hash_is_refused_and_kept(tmp_path, offline, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    os.makedirs(tmp_path / "models")
    stale = tmp_path / "models" / pretrained.file_name(50)
    stale.write_bytes(b"half a download")
    with pytest.raises(ConfigError, match=r"--init_weights: .* is not the published file \(md5 fac2f1"):
        resnet_v2.load_initial_weights(resnet_v2.build_model(3, 32), "imagenet")
    assert stale.read_bytes() == b"half a download"  # get_file would have deleted it on the failed re-download
