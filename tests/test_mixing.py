"""Mixup and CutMix: hand-computed pixels and labels, the CutMix box against numpy, the label
weight against the share of pixels that really came from the partner, seeds, and the same
results eagerly and inside tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from toolkit.config import DataConfig
from toolkit.data import mixing

B, H, W, C = 4, 8, 10, 3


def batch(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (B, H, W, C)).astype(np.float32)
    labels = np.array([0, 2, 1, 4], np.int32)
    return images, labels


def onehot(labels, n=5):
    return np.eye(n, dtype=np.float32)[labels]


def test_mixup_with_a_known_weight_gives_hand_computed_pixels_and_labels():
    images, labels = batch()
    mixed, soft = mixing.mixup(tf.constant(images), tf.constant(onehot(labels)), 0.3)
    # image 0's partner is image 3 (the batch reversed), image 1's is image 2
    np.testing.assert_allclose(mixed[0], 0.3 * images[0] + 0.7 * images[3], rtol=1e-6)
    np.testing.assert_allclose(mixed[1], 0.3 * images[1] + 0.7 * images[2], rtol=1e-6)
    np.testing.assert_allclose(soft[0], [0.3, 0, 0, 0, 0.7], rtol=1e-6)  # classes 0 and 4
    np.testing.assert_allclose(soft[2], [0, 0.3, 0.7, 0, 0], rtol=1e-6)  # classes 1 and 2
    np.testing.assert_allclose(np.sum(soft, axis=1), 1.0, rtol=1e-6)


def numpy_box(lam, cy, cx, h=H, w=W):
    cut_h, cut_w = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
    top, left = cy - cut_h // 2, cx - cut_w // 2
    return [min(max(top, 0), h), min(max(top + cut_h, 0), h), min(max(left, 0), w), min(max(left + cut_w, 0), w)]


@pytest.mark.parametrize("lam, cy, cx", [(0.5, 4, 5), (0.36, 0, 9), (0.9, 7, 0), (0.0, 3, 3), (1.0, 2, 2)])
def test_cutmix_pastes_the_partner_inside_the_box_and_weights_labels_by_its_share(lam, cy, cx):
    images, labels = batch(1)
    box = mixing.cutmix_box(H, W, lam, cy, cx).numpy().tolist()
    assert box == numpy_box(lam, cy, cx)
    mixed, soft, used = mixing.cutmix(tf.constant(images), tf.constant(onehot(labels)), tf.constant(box))
    mixed, soft = mixed.numpy(), soft.numpy()
    top, bottom, left, right = box
    inside = np.zeros((H, W), bool)
    inside[top:bottom, left:right] = True
    for i in range(B):
        partner = B - 1 - i
        np.testing.assert_array_equal(mixed[i][inside], images[partner][inside])
        np.testing.assert_array_equal(mixed[i][~inside], images[i][~inside])
        # the label weight of the partner is the share of pixels that really came from it
        from_partner = np.all(mixed[i] == images[partner], axis=-1) & ~np.all(images[i] == images[partner], axis=-1)
        share = from_partner.mean()
        assert soft[i, labels[partner]] == pytest.approx(share, abs=1e-6)
        assert soft[i, labels[i]] == pytest.approx(1 - share, abs=1e-6)
    assert float(used) == pytest.approx(1 - inside.mean(), abs=1e-6)


def settings(**kw):
    return mixing.MixSettings(num_classes=5, **{"mixup_alpha": 0.4, "cutmix_alpha": 1.0, **kw})


def run_both(images, labels, seed, s):
    """mix_batch eagerly and inside tf.data: both must agree; the eager result."""
    eager = [t.numpy() for t in mixing.mix_batch(tf.constant(images), tf.constant(labels), tf.constant(seed, tf.int64), s)]
    ds = tf.data.Dataset.from_tensors((images, labels)).map(
        lambda x, y: mixing.mix_batch(x, y, tf.constant(seed, tf.int64), s))
    graph = next(iter(ds.as_numpy_iterator()))
    for a, b in zip(eager, graph):
        np.testing.assert_allclose(a, b, atol=1e-5)
    return eager


def test_mixed_batches_have_soft_labels_summing_to_one_and_follow_the_seed():
    images, labels = batch(2)
    results = {seed: run_both(images, labels, seed, settings()) for seed in ((0, 0), (0, 1), (5, 2))}
    for mixed, soft in results.values():
        assert mixed.shape == images.shape and soft.shape == (B, 5) and soft.dtype == np.float32
        np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
    again = run_both(images, labels, (0, 0), settings())
    np.testing.assert_array_equal(again[0], results[(0, 0)][0])
    np.testing.assert_array_equal(again[1], results[(0, 0)][1])
    assert len({r[0].tobytes() for r in results.values()}) == 3


def classify(images, mixed, soft, labels):
    """Which mixing a batch got, and check it is self-consistent: 'none', 'mixup' or 'cutmix'."""
    partner = images[::-1]
    lam = soft[0, labels[0]]  # images 0 and 3 have different classes
    if np.array_equal(mixed, images):
        np.testing.assert_array_equal(soft, onehot(labels))
        return "none"
    own = np.all(mixed == images, axis=-1)
    pasted = np.all(mixed == partner, axis=-1)
    if np.all(own | pasted):
        assert lam == pytest.approx(1 - pasted[0].mean(), abs=1e-6)
        return "cutmix"
    np.testing.assert_allclose(mixed, lam * images + (1 - lam) * partner, rtol=1e-5, atol=1e-3)
    return "mixup"


def test_mix_prob_and_switch_prob_choose_the_branch_as_often_as_asked():
    images, labels = batch(3)
    fn = tf.function(lambda seed: mixing.mix_batch(tf.constant(images), tf.constant(labels), seed,
                                                   settings(prob=0.8, switch_prob=0.25)))
    counts = {"none": 0, "mixup": 0, "cutmix": 0}
    for i in range(400):
        mixed, soft = fn(tf.constant([9, i], tf.int64))
        counts[classify(images, mixed.numpy(), soft.numpy(), labels)] += 1
    # expected 80 / 240 / 80 (binomial sd about 8, 10, 8)
    assert 50 <= counts["none"] <= 110 and 200 <= counts["mixup"] <= 280 and 50 <= counts["cutmix"] <= 110, counts


@pytest.mark.parametrize("only", ["mixup", "cutmix"])
def test_one_alpha_gives_only_its_own_mixing(only):
    images, labels = batch(4)
    s = settings(mixup_alpha=0.4 if only == "mixup" else 0.0, cutmix_alpha=1.0 if only == "cutmix" else 0.0)
    kinds = {classify(images, *run_both(images, labels, (1, i), s), labels) for i in range(6)}
    assert kinds == {only}
    untouched = run_both(images, labels, (1, 0), mixing.MixSettings(5, 0.4, 1.0, prob=0.0))
    assert classify(images, *untouched, labels) == "none"


def test_beta_samples_have_the_beta_mean_and_variance():
    fn = tf.function(lambda seed, a: mixing.sample_beta(seed, a))
    for alpha in (0.4, 2.0):
        lam = np.array([float(fn(tf.constant([3, i], tf.int64), alpha)) for i in range(1500)])
        assert 0 <= lam.min() and lam.max() <= 1
        assert lam.mean() == pytest.approx(0.5, abs=0.03)
        assert lam.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.15)


def test_batch_seeds_differ_by_every_coordinate_and_repeat():
    base = mixing.batch_seed(1, 2, 3, 0).numpy()
    np.testing.assert_array_equal(base, mixing.batch_seed(1, 2, 3, 0).numpy())
    others = [mixing.batch_seed(*c).numpy().tobytes() for c in ((0, 2, 3, 0), (1, 1, 3, 0), (1, 2, 4, 0), (1, 2, 3, 1))]
    assert len(set(others) | {base.tobytes()}) == 5


def test_settings_from_the_config():
    assert mixing.from_config(DataConfig(), 0) is None
    s = mixing.from_config(DataConfig(mixup_alpha=0.2, mix_prob=0.7, mix_switch_prob=0.1), 3)
    assert s == mixing.MixSettings(3, 0.2, 0.0, 0.7, 0.1)
    with pytest.raises(ValueError, match="--mixup_alpha/--cutmix_alpha"):
        mixing.from_config(DataConfig(cutmix_alpha=1.0), 0)
