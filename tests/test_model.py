"""The model against the reference: keras.applications.ResNet{50,101,152}V2(weights=None)."""

import keras
import numpy as np
import pytest

from toolkit.models import resnet_v2

REFERENCES = {50: keras.applications.ResNet50V2, 101: keras.applications.ResNet101V2, 152: keras.applications.ResNet152V2}


def _reference(depth, size, classes=1000):
    return REFERENCES[depth](weights=None, input_shape=(size, size, 3), classes=classes, classifier_activation=None)


def _randomize(model, seed=0):
    """Non-trivial weights everywhere, BN moving statistics included (a fresh BN is an identity)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        new = []
        for w in layer.get_weights():
            if "batch_normalization" in type(layer).__name__.lower() or isinstance(layer, keras.layers.BatchNormalization):
                new.append(rng.uniform(0.5, 1.5, w.shape).astype(w.dtype))
            else:
                new.append((rng.standard_normal(w.shape) * 0.05).astype(w.dtype))
        if new:
            layer.set_weights(new)


def test_resnet50v2_has_the_reference_parameter_count():
    model = resnet_v2.build_model(num_classes=1000, image_size=224, depth=50)
    assert model.count_params() == 25_613_800


@pytest.mark.parametrize("depth", [101, 152])
def test_deeper_variants_match_reference_parameter_counts(depth):
    ours = resnet_v2.build_model(num_classes=1000, image_size=64, depth=depth)
    assert ours.count_params() == _reference(depth, 64).count_params()


def test_the_flag_accepts_exactly_the_depths_the_model_builds():
    """config.DEPTHS is spelled out so that reading flags never imports Keras; it must not drift from STAGES."""
    from toolkit import config

    assert config.DEPTHS == tuple(sorted(resnet_v2.STAGES))


def test_depth26_is_resnet50v2_with_two_blocks_per_stage():
    """Every layer of depth 26 is ResNet50V2's layer of that name and shape; what is missing is
    exactly the third to sixth blocks, and each stage still ends strided (64 px -> 2 px)."""
    ours = resnet_v2.build_model(num_classes=10, image_size=64, depth=26)
    ref = _reference(50, 64, classes=10)
    ref_by_name = {layer.name: layer for layer in ref.layers}
    for layer in ours.layers:
        if layer.weights:
            want = [tuple(w.shape) for w in ref_by_name[layer.name].weights]
            assert [tuple(w.shape) for w in layer.weights] == want, layer.name
    dropped = {f"conv{stage}_block{block}" for stage, blocks in ((2, 3), (3, 4), (4, 6), (5, 3))
               for block in range(3, blocks + 1)}
    expected = ref.count_params() - sum(layer.count_params() for layer in ref.layers
                                        if any(layer.name.startswith(block + "_") for block in dropped))
    assert ours.count_params() == expected
    assert tuple(ours.get_layer(resnet_v2.BACKBONE_OUTPUT).output.shape) == (None, 2, 2, 2048)


def test_layers_match_reference_by_name_and_shape():
    ours = resnet_v2.build_model(num_classes=1000, image_size=64)
    ref = _reference(50, 64)
    ours_by_name = {layer.name: layer for layer in ours.layers}
    weighted = [layer for layer in ref.layers if layer.weights]
    assert len(weighted) == sum(1 for layer in ours.layers if layer.weights)
    for layer in weighted:
        mine = ours_by_name[layer.name]
        assert [tuple(w.shape) for w in mine.weights] == [tuple(w.shape) for w in layer.weights], layer.name
        assert tuple(mine.output.shape) == tuple(layer.output.shape), layer.name


def test_same_outputs_as_reference_after_copying_weights():
    ref = _reference(50, 64)
    _randomize(ref)
    ours = resnet_v2.build_model(num_classes=1000, image_size=64)
    by_name = {layer.name: layer for layer in ref.layers}
    for layer in ours.layers:
        if layer.weights:
            layer.set_weights(by_name[layer.name].get_weights())
    x = np.random.default_rng(1).uniform(-1, 1, (3, 64, 64, 3)).astype("float32")
    expected = ref(x, training=False).numpy()
    got = ours(x, training=False).numpy()
    assert np.abs(expected).max() > 1e-3  # the comparison is not between two near-zero outputs
    assert np.abs(got - expected).max() < 1e-5


def test_no_projection_shortcut_outside_first_blocks():
    """The notebook's mistake: a 1x1 conv shortcut in every block (36.0M params instead of 23.6M)."""
    model = resnet_v2.build_model(num_classes=4, image_size=64)
    projections = sorted(layer.name for layer in model.layers if layer.name.endswith("_0_conv"))
    assert projections == [f"conv{s}_block1_0_conv" for s in (2, 3, 4, 5)]


def test_stem_and_strides_reduce_64px_to_2px():
    model = resnet_v2.build_model(num_classes=4, image_size=64)
    assert tuple(model.get_layer("conv1_conv").output.shape) == (None, 32, 32, 64)
    assert tuple(model.get_layer(resnet_v2.BACKBONE_OUTPUT).output.shape) == (None, 2, 2, 2048)


def test_logits_are_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = resnet_v2.build_model(num_classes=3, image_size=32)
        out = model(np.zeros((1, 32, 32, 3), "float32"))
        assert model.get_layer("conv1_conv").compute_dtype == "bfloat16"
        assert out.dtype.name == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_init_weights_copies_backbone_and_reinitializes_a_new_head(tmp_path, suffix):
    source = resnet_v2.build_model(num_classes=10, image_size=32)
    _randomize(source, seed=3)
    path = str(tmp_path / f"src{suffix}")
    source.save_weights(path) if suffix == ".weights.h5" else source.save(path)

    target = resnet_v2.build_model(num_classes=4, image_size=32)
    copied = resnet_v2.load_initial_weights(target, path)
    assert copied == sum(1 for layer in target.layers if layer.weights) - 1  # all but the head
    for name in ("conv1_conv", "conv3_block2_2_conv", "post_bn"):
        for a, b in zip(target.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert target.get_layer("predictions").get_weights()[0].shape == (2048, 4)


def test_init_weights_rejects_unrelated_files(tmp_path):
    bad = tmp_path / "junk.weights.h5"
    bad.write_bytes(b"not an h5 file")
    with pytest.raises(ValueError, match="--init_weights"):
        resnet_v2.load_initial_weights(resnet_v2.build_model(4, 32), str(bad))
    with pytest.raises(ValueError, match="must be imagenet or end in"):
        resnet_v2.load_initial_weights(resnet_v2.build_model(4, 32), str(tmp_path / "w.pt"))


def test_freeze_backbone_leaves_only_the_head_trainable():
    model = resnet_v2.build_model(num_classes=4, image_size=32, freeze_backbone=True)
    names = sorted(v.path for v in model.trainable_variables)
    assert names == ["predictions/bias", "predictions/kernel"]
