"""RandAugment ops against independent references: PIL (ImageOps, ImageEnhance, Image.transform)
on the same uint8 pixels, or hand-computed values; every op run eagerly AND inside tf.data (both
must agree, big_vision's habit).

Tolerances: PIL works on uint8 and truncates (Image.blend) or rounds (filters, resampling) to
integers, while our ops keep float32, so an exact op (lookup tables: equalize, posterize,
solarize, invert) must match exactly; a single blend or resample may be 1 off; Color, Contrast
and Sharpness compute a rounded grey or smoothed degenerate first and then blend, two roundings:
2 off. Geometric ops are compared where every bilinear neighbour lies inside the image (PIL and
TensorFlow treat the border neighbours differently) and where the source lies clearly outside
(both must show the grey fill).
"""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from toolkit.data import randaugment as ra

H, W = 12, 16


def noise(seed=0, lo=0, hi=256, shape=(H, W, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, shape).astype(np.uint8)


def run_both(fn, image: np.ndarray) -> np.ndarray:
    """fn eagerly and inside tf.data on the same float32 image: they must agree; the eager result."""
    x = image.astype(np.float32)
    eager = fn(tf.constant(x)).numpy()
    graph = next(iter(tf.data.Dataset.from_tensors(x).map(fn).as_numpy_iterator()))
    assert eager.dtype == np.float32 and eager.shape == x.shape
    np.testing.assert_allclose(eager, graph, atol=1e-4)
    return eager


def pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image)


# name, our op, PIL's op, tolerance in pixel values
PIXEL_CASES = [
    ("autocontrast", ra.auto_contrast, ImageOps.autocontrast, 1),
    ("equalize", ra.equalize, ImageOps.equalize, 0),
    ("invert", ra.invert, ImageOps.invert, 0),
]
PIXEL_CASES += [(f"posterize{b}", lambda x, b=b: ra.posterize(x, b), lambda im, b=b: ImageOps.posterize(im, b), 0)
                for b in (1, 3, 4, 8)]
# PIL refuses 0 bits (Pillow >= 10); keeping no bit leaves black
PIXEL_CASES += [("posterize0", lambda x: ra.posterize(x, 0), lambda im: Image.new("RGB", im.size), 0)]
PIXEL_CASES += [(f"solarize{t}", lambda x, t=t: ra.solarize(x, float(t)), lambda im, t=t: ImageOps.solarize(im, t), 0)
                for t in (0, 26, 128, 256)]
for _name, _ours, _theirs, _tol in (("color", ra.color, ImageEnhance.Color, 2),
                                     ("contrast", ra.contrast, ImageEnhance.Contrast, 2),
                                     ("brightness", ra.brightness, ImageEnhance.Brightness, 1),
                                     ("sharpness", ra.sharpness, ImageEnhance.Sharpness, 2)):
    PIXEL_CASES += [(f"{_name}{f}", lambda x, o=_ours, f=f: o(x, f), lambda im, t=_theirs, f=f: t(im).enhance(f), _tol)
                    for f in (0.1, 0.55, 1.45, 1.9)]


@pytest.mark.parametrize("name, ours, theirs, tol", PIXEL_CASES, ids=[c[0] for c in PIXEL_CASES])
def test_pixel_ops_match_pil(name, ours, theirs, tol):
    # a narrower range than 0-255 so that autocontrast has something to do, and more pixels than
    # grey levels, or equalize's step (pixels / 255) is 0 and PIL leaves the image alone
    image = noise(seed=len(name), lo=30, hi=200, shape=(24, 32, 3))
    got = run_both(ours, image)
    expected = np.asarray(theirs(pil(image)), np.float32)
    assert np.abs(got - expected).max() <= tol + 1e-3, name
    if name not in ("posterize8", "solarize256"):
        assert np.abs(got - image).max() > 5  # the op did something


def test_equalize_and_autocontrast_leave_a_flat_channel_alone():
    image = noise(seed=1)
    image[..., 1] = 77
    for ours, theirs in ((ra.equalize, ImageOps.equalize), (ra.auto_contrast, ImageOps.autocontrast)):
        got = run_both(ours, image)
        np.testing.assert_array_equal(got[..., 1], 77.0)
        assert np.abs(got - np.asarray(theirs(pil(image)), np.float32)).max() <= 1


def test_solarize_add_hand_computed():
    image = np.array([[[0, 100, 127], [128, 200, 255]]], np.uint8)
    got = run_both(lambda x: ra.solarize_add(x, 99.0), image)
    np.testing.assert_array_equal(got, [[[99, 199, 226], [128, 200, 255]]])


def source_points(matrix, h=H, w=W):
    """Where PIL's affine matrix samples each output pixel, in pixel-centre index coordinates."""
    a, b, c, d, e, f = matrix
    y, x = np.mgrid[0:h, 0:w] + 0.5
    return a * x + b * y + c - 0.5, d * x + e * y + f - 0.5


def rotation_matrix(degrees, h=H, w=W):
    """PIL's own rotate matrix (Image.rotate's code path, written out independently)."""
    t = -np.radians(degrees)
    cx, cy = w / 2, h / 2
    return (np.cos(t), np.sin(t), cx - np.cos(t) * cx - np.sin(t) * cy,
            -np.sin(t), np.cos(t), cy + np.sin(t) * cx - np.cos(t) * cy)


GEOMETRIC_CASES = [
    ("rotate27", lambda x: ra.rotate(x, 27.0), lambda im: im.rotate(27.0, Image.BILINEAR, fillcolor=(128,) * 3),
     rotation_matrix(27.0)),
    ("rotate-13", lambda x: ra.rotate(x, -13.0), lambda im: im.rotate(-13.0, Image.BILINEAR, fillcolor=(128,) * 3),
     rotation_matrix(-13.0)),
]
for _name, _ours, _matrix in (("shear_x", ra.shear_x, lambda v: (1, v, 0, 0, 1, 0)),
                               ("shear_y", ra.shear_y, lambda v: (1, 0, 0, v, 1, 0)),
                               ("translate_x", ra.translate_x, lambda v: (1, 0, v, 0, 1, 0)),
                               ("translate_y", ra.translate_y, lambda v: (1, 0, 0, 0, 1, v))):
    for _v in ((0.27, -0.3) if _name.startswith("shear") else (4.0, -2.5)):
        GEOMETRIC_CASES.append((
            f"{_name}{_v}", lambda x, o=_ours, v=_v: o(x, v),
            lambda im, m=_matrix(_v): im.transform(im.size, Image.AFFINE, m, Image.BILINEAR, fillcolor=(128,) * 3),
            _matrix(_v)))


@pytest.mark.parametrize("name, ours, theirs, matrix", GEOMETRIC_CASES, ids=[c[0] for c in GEOMETRIC_CASES])
def test_geometric_ops_match_pil(name, ours, theirs, matrix):
    image = noise(seed=3)
    got = run_both(ours, image)
    expected = np.asarray(theirs(pil(image)), np.float32)
    xs, ys = source_points(matrix)
    inside = (xs >= 0) & (xs <= W - 1 - 1e-3) & (ys >= 0) & (ys <= H - 1 - 1e-3)
    outside = (xs < -1.01) | (xs > W + 0.01) | (ys < -1.01) | (ys > H + 0.01)
    assert inside.mean() > 0.3 and outside.any(), name  # both kinds of pixel are really tested
    assert np.abs(got[inside] - expected[inside]).max() <= 1 + 1e-3, name
    np.testing.assert_array_equal(got[outside], 128.0)
    np.testing.assert_array_equal(expected[outside], 128.0)


def test_magnitude_mapping_follows_timm_increasing():
    image = noise(seed=4).astype(np.float32)
    x = tf.constant(image)

    def same(a, b):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)

    same(ra.apply_op(x, "Rotate", 9, -1.0), ra.rotate(x, -27.0))
    same(ra.apply_op(x, "ShearX", 10, 1.0), ra.shear_x(x, 0.3))
    same(ra.apply_op(x, "TranslateY", 5, -1.0), ra.translate_y(x, -0.225 * H))
    same(ra.apply_op(x, "Posterize", 9), ra.posterize(x, 1))
    same(ra.apply_op(x, "Solarize", 9), ra.solarize(x, 26.0))
    same(ra.apply_op(x, "SolarizeAdd", 9), ra.solarize_add(x, 99.0))
    same(ra.apply_op(x, "Contrast", 9, -1.0), ra.contrast(x, 1.0 - 0.81))
    # every op with a magnitude is the identity at M=0, except Posterize, which then keeps 4 bits
    for name in ra.OP_NAMES:
        if name not in ("AutoContrast", "Equalize", "Invert", "Posterize"):
            same(ra.apply_op(x, name, 0, -1.0), x)
    same(ra.apply_op(x, "Posterize", 0), ra.posterize(x, 4))


def test_rand_augment_is_seeded_and_the_same_inside_tf_data():
    image = noise(seed=5, shape=(32, 32, 3))
    outs = {}
    for seed in ((1, 2), (1, 3), (7, 0)):
        outs[seed] = run_both(lambda x, s=seed: ra.rand_augment(x, tf.constant(s, tf.int64), 2, 9), image)
    again = ra.rand_augment(tf.constant(image, tf.float32), tf.constant((1, 2), tf.int64), 2, 9).numpy()
    np.testing.assert_array_equal(outs[(1, 2)], again)
    changed = [not np.array_equal(o, image) for o in outs.values()]
    assert sum(changed) >= 2  # each op applies with p=0.5, so one of three may be left alone
    assert len({o.tobytes() for o in outs.values()}) == 3
    for o in outs.values():
        assert o.min() >= 0.0 and o.max() <= 255.0


def test_rand_augment_draws_every_op_about_equally_often():
    """Over many seeds, each op (recognised by applying it alone) is chosen about 1/2 x 1/15 of the
    time and the image is left alone about half of the time."""
    image = tf.constant(noise(seed=6, lo=20, hi=220, shape=(24, 32, 3)), tf.float32)  # big enough for Equalize
    singles = [(name, ra.apply_op(image, name, 9, s).numpy()) for name in ra.OP_NAMES for s in (-1.0, 1.0)]
    singles.append(("none", image.numpy()))
    counts = dict.fromkeys([name for name, _ in singles], 0)
    fn = tf.function(lambda s: ra.rand_augment(image, s, 1, 9))
    trials = 600
    for i in range(trials):
        out = fn(tf.constant([11, i], tf.int64)).numpy()
        counts[next(name for name, single in singles if np.allclose(out, single, atol=1e-3))] += 1
    # expected 20 per op (binomial sd 4.4) and 300 for none (sd 12)
    assert all(6 <= counts[name] <= 40 for name in ra.OP_NAMES), counts
    assert 250 <= counts["none"] <= 350, counts
